"""livedash: a real-time operations dashboard service for hospitals."""

__version__ = "0.1.0"
