#!/bin/sh
# Runs once, on an empty data volume: livedash's role (REPLICATION, to read its logical slot;
# not a superuser) and the database it owns, so that `livedash migrate` can create its tables.
# Against the hospital's own PostgreSQL, do the same by hand (docs/deploy.md, "PostgreSQL").
set -e
: "${POSTGRES_LIVEDASH_PASSWORD:?set POSTGRES_LIVEDASH_PASSWORD in deploy/livedash.env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v password="$POSTGRES_LIVEDASH_PASSWORD" <<'SQL'
CREATE ROLE livedash WITH LOGIN REPLICATION PASSWORD :'password';
CREATE DATABASE hospital OWNER livedash;
SQL
