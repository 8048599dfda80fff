"""The Socket.IO gateway: authentication, subscriptions, and fan-out of metric updates."""
