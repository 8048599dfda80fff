"""The web UI: static assets and the page routes."""
