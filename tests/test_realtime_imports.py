"""A serving process imports python-engineio without its clients' libraries (requests,
aiohttp: 12 MB of every instance), and can still import them afterwards (Web Push)."""

from __future__ import annotations

import json
import subprocess
import sys

SERVE_IMPORTS = """
import json, sys
from livedash.realtime.imports import import_engineio_for_serving
first = import_engineio_for_serving()
again = import_engineio_for_serving()
import livedash.app, livedash.service, livedash.services  # what `livedash serve` imports
loaded = sorted(name for name in ("requests", "aiohttp", "websocket") if name in sys.modules)
import engineio, engineio.async_client, engineio.client
server = engineio.AsyncServer(async_mode="asgi")  # the server works as ever
import aiohttp  # and what comes later gets the real library
print(json.dumps({
    "first": first, "again": again, "loaded_by_the_service": loaded,
    "async_client_has_aiohttp": engineio.async_client.aiohttp is not None,
    "aiohttp_later": aiohttp.ClientSession.__name__,
}))
"""


def run(script: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_a_serving_process_holds_no_client_library_yet_can_import_one_later() -> None:
    assert run(SERVE_IMPORTS) == {
        "first": True,
        "again": False,
        "loaded_by_the_service": [],
        "async_client_has_aiohttp": False,
        "aiohttp_later": "ClientSession",
    }


def test_nothing_is_hidden_once_a_client_library_is_imported() -> None:
    script = """
import json, sys
import aiohttp
from livedash.realtime.imports import import_engineio_for_serving
done = import_engineio_for_serving()
import engineio.async_client
print(json.dumps({"done": done, "has": engineio.async_client.aiohttp is not None}))
"""
    assert run(script) == {"done": False, "has": True}
