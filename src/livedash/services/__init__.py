"""The composition root: every shared resource of one process, built once and closed once.

`open_services(settings, server)` builds a `Services` for the deployment mode the database
URL names, and closes everything in reverse order when it exits:

- **embedded** (`sqlite://`): this process reads the feed for its whole life.
- **cluster** (`postgresql://`): the instance that holds the leader lock reads the feed.

Redis, when configured (`LIVEDASH_REDIS_URL`), shares values, the update history, fan-out and
rate limits between instances; without it they stay in this process.

Every component takes the instances it uses (the engine, `SharedRedis` or its pool, the
breakers), never a URL. The process has one `AsyncEngine`; its writers take
`write_locking(engine)`, the same pool. Two things keep connections of their own, on
purpose: the change feed (a SQLite reader and writer that never wait for the service's
pool; on PostgreSQL the replication slot's connection) and the leader election (its
advisory lock lives exactly as long as its connection).

Consumers of the metric stream (alerts, notifications, reports) register through `Consumer`:
they hear every batch of changed values while this instance reads the feed, and run a task
while it leads. They are built from `Services`, and reach the rest only through it.

The modules: `root` (`Services`, `open_services`), the parts it builds in `alerting`,
`reporting`, `health` and `senders`, and `worker`, a socket worker's root.
"""

from livedash.services.root import ConsumerFactory, Services, open_services
from livedash.services.worker import WorkerServices, open_worker_services

__all__ = [
    "ConsumerFactory",
    "Services",
    "WorkerServices",
    "open_services",
    "open_worker_services",
]
