"""Several instances as one: the elected feed reader, metric state shared in Redis, caches."""
