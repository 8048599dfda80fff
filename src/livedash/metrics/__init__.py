"""Metrics: definitions, what each row contributes, the incremental engine, the hourly
roll-ups (`history` writes them, `figures` reads them) and the pipeline that feeds them all."""
