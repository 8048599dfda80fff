"""Metrics: definitions, the incremental engine, and the pipeline that feeds it."""
