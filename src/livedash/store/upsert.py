"""Adding to stored totals in one statement, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def add_to_rows(
    connection: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str],
    summed: Sequence[str] = (),
    maximum: Sequence[str] = (),
) -> None:
    """Insert `rows`, or add their `summed` columns to (and max their `maximum` columns with)
    the stored row of the same `keys`."""
    if not rows:
        return
    dialect = connection.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    updates: dict[str, Any] = {name: table.c[name] + statement.excluded[name] for name in summed}
    for name in maximum:
        greatest = func.greatest if dialect == "postgresql" else func.max
        stored, added = table.c[name], statement.excluded[name]
        # Either side may be NULL (nothing observed yet); NULL must not win.
        updates[name] = func.coalesce(greatest(stored, added), stored, added)
    await connection.execute(
        statement.on_conflict_do_update(index_elements=list(keys), set_=updates), list(rows)
    )
