"""python-engineio without the libraries of its clients, for a process that only serves.

python-engineio's package imports its clients whatever part of it is used, and they import
`requests` and `aiohttp` where those are installed (they are: pywebpush needs them): 12 MB of
every instance's memory (bench/idle_sockets.py) for code a server never runs. Both clients
are written for those libraries to be absent (`requests = None`, `aiohttp = None`). A
process that serves imports python-engineio first, with both hidden for that one import;
anything imported later (the Web Push sender's aiohttp) gets the real ones. The clients of
that process stay without them: it has none. tests/test_realtime_imports.py guards this.
"""

from __future__ import annotations

import sys

HIDDEN = ("requests", "aiohttp", "websocket")
"""The client libraries python-engineio tries: requests and websocket-client for `Client`,
aiohttp for `AsyncClient`."""


def import_engineio_for_serving() -> bool:
    """Import python-engineio with its clients' libraries hidden; False (nothing done) when
    it, or one of them, is already imported in this process."""
    if "engineio" in sys.modules or any(name in sys.modules for name in HIDDEN):
        return False
    for name in HIDDEN:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import engineio  # noqa: F401
    finally:
        for name in HIDDEN:
            del sys.modules[name]
    return True
