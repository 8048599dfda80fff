"""The service's own health: circuit breakers and the status told to clients and operators."""
