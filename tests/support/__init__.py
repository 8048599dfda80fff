"""Helpers that several test modules share, so that no test module imports another.

What benches use too (the real servers, the SQL oracle, the reference recovery client, the
event recorder) lives in `livedash.testing`; what only tests use lives here:

- `live`: the service in the test's own process (`LiveServer`), and the `serve` and `connect`
  fixtures' types;
- `writers`: writing as the hospital's own programs do (sqlite3, asyncpg), users included;
- `cases`: a fresh database per hypothesis example, on either backend;
- `operations`: every kind of write a property test draws from;
- `rollups`: the hourly roll-ups recounted from the rows, and as stored;
- `instances`: `livedash serve` in a process of its own, with the test's settings;
- `probes`: raw Engine.IO sockets, `/health`, and the services inside a running server;
- `security`: the no-foreign-data check and generous rate limits;
- `browser`, `schema`: the system's Chromium; the newest migration;
- `smtp`, `push_service`: a throwaway SMTP server (aiosmtpd) and a stand-in Web Push service
  with the browser's side of a subscription (it decrypts what arrives);
- `stalled`: a WebSocket client that stops reading;
- `reports`: a realistic report document, built without a database;
- `report_oracle`: every report's figures recounted from the rows with plain SQL;
- `report_schedules`: reports and schedules over REST on a clock that stands still, a
  user's e-mail address, `/metrics` as Prometheus reads it, a mailed attachment and a
  PDF's text.
"""
