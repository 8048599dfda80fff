"""Notifications: who hears of an alert, on which channel, and the in-app history."""
