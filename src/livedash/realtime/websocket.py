"""One Engine.IO connection over WebSocket, served with less per connection than stock.

python-engineio's WebSocket loop starts a task for every packet it waits for, under an
`asyncio.wait_for` (on Python 3.11, one more task and a timer each), and its writer waits
for the next packet to send under another `wait_for`. At 1,000 connections that was five
tasks and a dozen timer handles per connection, a tenth of the memory and most of the
objects a full garbage collection walks through (an event-loop stall of up to 140 ms,
measured with gc callbacks during bench/run.py). This loop is the stock one without them:
packets are awaited directly, and the writer waits on its queue without a timeout. A
connection that stops answering pings is still closed by python-engineio's service task,
which checks every connection's last pong (tests/test_realtime_connections.py).

The upgrade from polling and every packet's handling are python-engineio's own
(`AsyncSocket.receive`, `close`, the queue); tests/test_realtime_frames.py covers both paths.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket


def shed_request(environ: dict[str, Any]) -> None:
    """Drop what an Engine.IO connection's request environ holds that nothing reads once the
    connection is served: python-engineio keeps the environ for the connection's life (the
    handler's frames, python-socketio's `environ`), and its request body reader is an instance
    of a class defined per request (2.4 KB per socket with bench/idle_sockets.py), beside
    every header, twice (the environ's and the ASGI scope's). livedash reads only the
    client's address (`asgi.scope`'s `client`) and its refusal."""
    kept = {
        key: value
        for key, value in environ.items()
        if not key.startswith("HTTP_") and key != "wsgi.input"
    }
    environ.clear()  # a dict keeps its table when keys are deleted; cleared, it shrinks
    environ.update(kept)
    scope = environ.get("asgi.scope")
    if isinstance(scope, dict):
        scope["headers"] = []


def ping_on_timers(engine: Any) -> None:
    """Make `engine` (a python-engineio `AsyncServer`) wait for each socket's next ping on a
    timer instead of a task: a task sleeping through the ping interval, per socket, is 1 KB
    of an idle socket's memory. What the ping does is python-engineio's `_send_ping`."""
    start_task = engine.start_background_task

    def start(target: Any, *args: Any, **kwargs: Any) -> Any:
        socket = getattr(target, "__self__", None)
        if getattr(target, "__func__", None) is AsyncSocket._send_ping and not args:
            asyncio.get_running_loop().call_later(engine.ping_interval, _ping, socket)
            return None
        return start_task(target, *args, **kwargs)

    engine.start_background_task = start


def _ping(socket: Any) -> None:
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()  # the pong is due within the ping timeout from now
        socket.queue.put_nowait(packet.Packet(packet.PING))


async def serve(socket: Any, ws: Any) -> None:
    """Run `socket` (an engineio `AsyncSocket`) over `ws` (its ASGI WebSocket, accepted)
    until either side closes it."""
    server = socket.server
    if socket.connected:
        if not await _upgrade(socket, ws):
            return
    else:
        socket.connected = True
        socket.upgraded = True
    writer = asyncio.ensure_future(_write(socket, ws))
    while True:
        try:
            data = await ws.wait()
        except Exception:  # the client went away (OSError), or the server is closing
            break
        if len(data) > server.max_http_buffer_size:
            break
        try:
            await socket.receive(packet.Packet(encoded_packet=data))
        except exceptions.UnknownPacketError:
            pass
        except exceptions.SocketIsClosedError:
            break
        except Exception:
            # A packet that does not decode, or a handler that failed: as python-engineio
            # does, log it and keep the connection.
            server.logger.exception("Unknown receive error")
    await socket.queue.put(None)  # the writer sends what is queued, then closes the WebSocket
    await writer
    await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


async def _upgrade(socket: Any, ws: Any) -> bool:
    """python-engineio's upgrade from long-polling: probe, then UPGRADE."""
    socket.upgrading = True  # holds packet sends during the upgrade
    try:
        probe = packet.Packet(encoded_packet=await ws.wait())
        if probe.packet_type != packet.PING or probe.data != "probe":
            socket.server.logger.info("%s: Failed websocket upgrade, no PING packet", socket.sid)
            return False
        await ws.send(packet.Packet(packet.PONG, data="probe").encode())
        await socket.queue.put(packet.Packet(packet.NOOP))  # ends the pending long-poll
        upgrade = packet.Packet(encoded_packet=await ws.wait())
        if upgrade.packet_type != packet.UPGRADE:
            socket.server.logger.info("%s: Failed websocket upgrade, no UPGRADE packet", socket.sid)
            return False
        socket.upgraded = True
        return True
    except Exception:  # the client went away, or sent what does not decode
        return False
    finally:
        socket.upgrading = False


async def _write(socket: Any, ws: Any) -> None:
    queue: asyncio.Queue[Any] = socket.queue
    while True:
        packets = [await queue.get()]
        queue.task_done()
        while packets[-1] is not None and not queue.empty():
            packets.append(queue.get_nowait())
            queue.task_done()
        try:
            for item in packets:
                if item is None:
                    await ws.close()
                    return
                await ws.send(item.encode())
        except Exception:
            await ws.close()
            return
