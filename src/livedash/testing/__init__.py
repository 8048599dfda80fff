"""Support for livedash's tests and benchmarks: real servers, the SQL truth, reference clients.

A public module shipped with the package, like `structlog.testing`, so that the test suite and
the scripts in bench/ import it without path tricks. No other livedash module imports it (a
test checks that): it serves those who test livedash from outside, never the service. Some of
it needs the `dev` extra (aiohttp) and the servers installed on the machine (PostgreSQL with
wal2json, Redis, nginx), as the tests do.

- `servers`: throwaway PostgreSQL, Redis and nginx processes on free loopback ports;
- `oracle`: every metric recomputed from the tables with plain SQL, and how a screen differs;
- `recorder`: a socket.io client that records every event and lets a test await one;
- `screen`: the reference recovery client (docs/api.md, Recovery), used by the fault tests
  and the soak; `screens`: many of them in worker processes;
- `hospital`: the benches' hospital and users, and its writer and simulator processes;
- `service`: `livedash serve` in a child process; `deployment`: PostgreSQL, Redis, several
  instances and nginx, and a monitor of their `/health`;
- `watchers`: clients timing each update of one value, here or in worker processes;
- `processes`: the plumbing of worker processes driven over pipes;
- `stats` and `usage`: percentiles as the benches print them, and what a run costs the machine.
"""
