"""Imports run one way: down the data path, and never into what composes it.

docs/architecture.md draws the picture; this test holds the code to it. Each top-level part
of the package may import the foundation and the parts listed for it, nothing else.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import livedash

PACKAGE = Path(livedash.__file__).parent

FOUNDATION = {"errors", "settings", "settings_doc", "aio", "timeutil", "observability"}
"""Imported by anyone; they import only each other."""

DATA_PATH = ["store", "changefeed", "metrics", "cluster", "realtime"]
"""Each may import those before it (and the foundation), and `auth` from `realtime` on."""

ALLOWED: dict[str, set[str]] = {
    "store": set(),
    "changefeed": {"store"},
    "metrics": {"store", "changefeed"},
    "cluster": {"store", "changefeed", "metrics"},
    "realtime": {"store", "changefeed", "metrics", "cluster", "auth"},
    "auth": {"store"},
    # Writers reach the rest only through the database, as the hospital's application does.
    "simulator": {"store"},
    "ingest": {"store", "changefeed", "auth"},
    # Alerts hear the metric stream on the leader; notifications hear the alerts' events.
    # Both push to screens through what the composition root hands them, not the gateway.
    "alerts": {"store", "changefeed", "metrics", "cluster", "auth"},
    "notifications": {"store", "changefeed", "metrics", "cluster", "auth", "alerts"},
    # Reports read the roll-ups through the metric view and mail through notifications.
    "reports": {"store", "changefeed", "metrics", "cluster", "auth", "notifications"},
    # The composition root builds every part; the web and the entry points compose it.
    "services": {*DATA_PATH, "auth", "ingest", "alerts", "notifications", "reports"},
    "web": {*DATA_PATH, "auth", "ingest", "services", "alerts", "notifications", "reports"},
    "app": {*DATA_PATH, "auth", "ingest", "services", "web", "alerts", "notifications", "reports"},
    # Running it: the main process and its socket workers, which it hands connections to.
    "service": {"app", "web", "simulator", "cluster", "realtime"},
    "worker": {"cluster", "realtime", "service"},
    # The whole doctor: the database's checks, and those of the key, e-mail and Web Push.
    "doctor": {"store", "changefeed", "auth", "notifications"},
    "cli": {
        "doctor",
        *DATA_PATH,
        "auth",
        "ingest",
        "alerts",
        "notifications",
        "reports",
        "services",
        "web",
        "app",
        "service",
        "simulator",
    },
    "testing": {
        *DATA_PATH,
        "auth",
        "ingest",
        "alerts",
        "notifications",
        "services",
        "web",
        "app",
        "service",
        "simulator",
    },
}


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, part) for every `livedash.<part>` this file imports."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "livedash" and len(parts) > 1:
                yield node.lineno, parts[1]


def test_every_import_goes_down_the_data_path() -> None:
    against: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        if part in ("__init__", "__main__"):
            continue
        allowed = FOUNDATION if part in FOUNDATION else ALLOWED[part] | FOUNDATION
        for line, target in _imports(path):
            if target != part and target not in allowed:
                against.append(f"{path.relative_to(PACKAGE)}:{line}: {part} imports {target}")
    assert not against, "imports against the direction:\n" + "\n".join(against)


def test_no_part_of_the_service_imports_the_test_support() -> None:
    users = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if _part(path) != "testing"
        for line, target in _imports(path)
        if target == "testing"
    ]
    assert not users


def test_every_part_has_a_rule() -> None:
    parts = {_part(path) for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert parts <= FOUNDATION | set(ALLOWED), parts - FOUNDATION - set(ALLOWED)
