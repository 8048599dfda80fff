"""Alerts: rules evaluated on the leader against the metric stream, and their lifecycle."""
