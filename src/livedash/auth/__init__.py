"""Authentication (JWT) and authorisation (roles, department scope)."""
