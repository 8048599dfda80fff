"""REST ingest's writer: machine writers write the hospital's operational tables with an API key.

The writes land in the database exactly as the main application's own do, so the change
capture picks them up and dashboards update; there is no separate path. One request is one
transaction: if any operation fails, none is written, and the error names the operation.

A department's code decides who sees its rows (users are scoped by code), so a key may create
departments but never change a department's code: that would hand a whole department's beds,
patients and history to the users of another code in one stroke. Nor may it delete one: a new
department could take the freed id (SQLite reuses the highest) with another code, and every
row the main application still writes under that id would follow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import ConnectionPool
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.auth.api_keys import ApiKeyAuthenticator, ApiKeyInfo, Scope
from livedash.auth.ratelimit import RateLimiter, shared_storage
from livedash.changefeed.rows import parse_timestamp
from livedash.errors import (
    ClientError,
    Forbidden,
    InvalidPayload,
    StoreError,
)
from livedash.settings import Settings
from livedash.store.engine import write_locking
from livedash.store.models import Base

log = structlog.get_logger(__name__)

MAX_OPERATIONS = 500

IngestTable = Literal[
    "departments",
    "rooms",
    "beds",
    "patients",
    "admissions",
    "appointments",
    "bills",
    "payments",
    "staff",
    "staff_shifts",
    "alerts",
]
"""The hospital's operational tables; users, keys and livedash's own tables are not writable."""


class Operation(BaseModel):
    """One write: `row` holds column values; update and delete find the row by its `id`."""

    table: IngestTable
    op: Literal["insert", "update", "delete"]
    row: dict[str, Any] = Field(
        description="Column values: timestamps in ISO 8601 (converted to UTC), money in cents."
    )


class IngestRequest(BaseModel):
    """A batch of writes, applied all together or not at all."""

    operations: list[Operation] = Field(min_length=1, max_length=MAX_OPERATIONS)


class IngestResult(BaseModel):
    """What was written: how many operations, and each one's row `id`."""

    applied: int
    ids: list[int]


class Ingest:
    """The ingest service: writes on the service's engine, the key checks and the per-key
    rate limit."""

    def __init__(
        self,
        settings: Settings,
        database: AsyncEngine,
        connection_pool: ConnectionPool | None = None,
    ) -> None:
        self._limiter = RateLimiter(
            settings.rate_limit_api_key,
            namespace="api_key",
            storage_uri=shared_storage(settings.redis_url),
            connection_pool=connection_pool,
        )
        self._writer = write_locking(database)
        self._keys = ApiKeyAuthenticator(database)

    async def __aenter__(self) -> Ingest:
        await self._limiter.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._limiter.aclose()

    async def admit(self, key: str) -> ApiKeyInfo:
        """The key's details once it is valid for ingest and its rate limit allows a request."""
        info = await self._keys.authenticate(key, Scope.INGEST)
        await self._limiter.hit(info.name)
        return info

    async def apply(self, key: ApiKeyInfo, request: IngestRequest) -> IngestResult:
        """Write every operation in one transaction; the first failure writes none of them."""
        tables = sorted({operation.table for operation in request.operations})
        ids: list[int] = []
        index = 0
        try:
            async with self._writer.begin() as connection:
                for index, operation in enumerate(request.operations):
                    ids.append(await _apply(connection, index, operation))
        except ClientError as error:
            log.info("ingest_refused", key=key.name, index=index, reason=error.message)
            raise
        except IntegrityError as error:
            log.info("ingest_refused", key=key.name, index=index, reason="integrity")
            raise ClientError(
                f"operation {index}: the database refused it ({_reason(error)}); "
                "nothing was written",
                index=index,
            ) from error
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"cannot write the ingested operations: {error}") from error
        log.info("ingest_applied", key=key.name, operations=len(ids), tables=tables)
        return IngestResult(applied=len(ids), ids=ids)


def validation_message(error: ValidationError) -> str:
    """The first problem of a batch, naming its operation."""
    first = error.errors()[0]
    location = first["loc"]
    if len(location) >= 2 and location[0] == "operations" and isinstance(location[1], int):
        where = ".".join(str(part) for part in location[2:])
        return f"operation {location[1]}: {where + ': ' if where else ''}{first['msg']}"
    return f"{'.'.join(str(part) for part in location) or 'body'}: {first['msg']}"


async def _apply(connection: AsyncConnection, index: int, operation: Operation) -> int:
    """Write one operation; the id of its row."""
    table = Base.metadata.tables[operation.table]
    values = _values(table, index, operation.row)
    if operation.op == "insert":
        result = await connection.execute(table.insert().values(values))
        key = result.inserted_primary_key
        return int(key[0]) if key is not None else 0
    row_id = values.pop("id", None)
    if not isinstance(row_id, int):
        raise InvalidPayload(f"operation {index}: {operation.op} needs the row's id", index=index)
    if operation.table == "departments":
        await _keep_department_code(connection, table, index, operation.op, row_id, values)
    if operation.op == "update":
        if not values:
            raise InvalidPayload(f"operation {index}: update names no column to set", index=index)
        result = await connection.execute(update(table).where(table.c.id == row_id).values(values))
    else:
        if values:
            raise InvalidPayload(f"operation {index}: delete takes only the id", index=index)
        result = await connection.execute(delete(table).where(table.c.id == row_id))
    if not result.rowcount:
        raise ClientError(
            f"operation {index}: there is no {operation.table} row with id {row_id}", index=index
        )
    return row_id


async def _keep_department_code(
    connection: AsyncConnection,
    table: Table,
    index: int,
    op: str,
    row_id: int,
    values: Mapping[str, Any],
) -> None:
    """Refuse an update or delete that would take a code from an existing department."""
    if op == "delete":
        raise Forbidden(
            f"operation {index}: departments cannot be deleted through ingest "
            "(a department's id keeps its code, which decides who sees its rows)",
            index=index,
        )
    if "code" not in values:
        return
    current = await connection.scalar(select(table.c.code).where(table.c.id == row_id))
    # A row that does not exist is refused by the update itself; the same code is a no-op.
    if current is not None and current != values["code"]:
        raise Forbidden(
            f"operation {index}: departments.code cannot be changed through ingest "
            "(it decides who sees the department's rows); only new departments take a code",
            index=index,
        )


def _values(table: Table, index: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` decoded with the model's column types; unknown columns and bad values refused."""
    values: dict[str, Any] = {}
    for name, value in row.items():
        column = table.columns.get(name)
        if column is None:
            raise InvalidPayload(
                f"operation {index}: {table.name} has no column {name[:64]!r}", index=index
            )
        try:
            values[name] = _decode(column, value)
        except ValueError as error:
            raise InvalidPayload(
                f"operation {index}: {table.name}.{name} {error}", index=index
            ) from error
    return values


def _decode(column: Column[Any], value: Any) -> Any:
    """`value` as `column` stores it; `ValueError` says what was expected."""
    if value is None:
        if not column.nullable:
            raise ValueError("must not be null")
        return None
    kind = column.type
    if isinstance(kind, DateTime):
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be an ISO 8601 timestamp")
        try:
            return parse_timestamp(value)
        except ValueError:
            raise ValueError("must be an ISO 8601 timestamp") from None
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if isinstance(kind, Integer):
        if type(value) is not int:
            unit = " (cents)" if column.name.endswith("_cents") else ""
            raise ValueError(f"must be an integer{unit}")
        if not -(2**63) <= value < 2**63:
            raise ValueError("is out of range")
        return value
    if isinstance(kind, Float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return float(value)
    if isinstance(kind, String):
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if kind.length is not None and len(value) > kind.length:
            raise ValueError(f"must be at most {kind.length} characters")
        return value
    raise ValueError("cannot be written through ingest")


def _reason(error: IntegrityError) -> str:
    """The database's reason, without the statement and its parameters."""
    return str(error.orig).splitlines()[0][:200] if error.orig is not None else "constraint"
