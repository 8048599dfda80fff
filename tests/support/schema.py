"""The schema as the migrations define it."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from livedash.store.migrate import alembic_config


def head_revision() -> str:
    """The newest migration's revision."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head
