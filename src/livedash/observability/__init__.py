"""Logging, health and (later) Prometheus metrics."""
