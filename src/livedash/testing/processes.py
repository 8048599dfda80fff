"""Worker processes that a bench drives over pipes: the plumbing shared by its client processes.

`WorkerProcesses` starts one process per args tuple with multiprocessing's "spawn" context,
each given the child end of its own `Pipe` as its last argument. The bench sends orders as
tuples (`send`, `send_all`) and waits for one answer from every process (`receive_all`); a
process that dies, answers ("error", text) or answers another kind than expected raises
RuntimeError. As a context manager it starts the processes, and at the end sends each
("close",), waits `join_seconds` for it and kills what is still alive.

The target must be a module-level function: spawn imports it by name in the child, from an
installed module (such as this package's) or from the script that runs as `__main__`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any


class WorkerProcesses:
    """One spawned process per args tuple: `target(*args, pipe)`, named `{name}-{number}`."""

    def __init__(
        self,
        target: Callable[..., object],
        args: Sequence[tuple[Any, ...]],
        name: str,
        join_seconds: float,
        *,
        label: str = "worker process",
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.join_seconds = join_seconds
        self.label = label
        """How errors name a process: "a {label} failed: ..."."""
        self._pipes: list[Connection] = []
        self._processes: list[tuple[BaseProcess, Connection]] = []
        for number, arguments in enumerate(args):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=target, args=(*arguments, theirs), name=f"{name}-{number}", daemon=True
            )
            self._pipes.append(mine)
            self._processes.append((process, theirs))

    def __len__(self) -> int:
        return len(self._pipes)

    def __enter__(self) -> WorkerProcesses:
        for process, theirs in self._processes:
            process.start()
            theirs.close()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("close",))
        for process, _ in self._processes:
            process.join(self.join_seconds)
            if process.is_alive():
                process.kill()
                process.join()

    def send(self, number: int, message: tuple[Any, ...]) -> None:
        """Send `message` to process `number`."""
        self._pipes[number].send(message)

    def send_all(self, message: tuple[Any, ...]) -> None:
        """Send `message` to every process."""
        for pipe in self._pipes:
            pipe.send(message)

    async def receive_all(self, expected: str) -> list[tuple[Any, ...]]:
        """One message of kind `expected` from every process, in process order."""
        return list(await asyncio.gather(*(self._receive(pipe, expected) for pipe in self._pipes)))

    async def _receive(self, pipe: Connection, expected: str) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = await asyncio.to_thread(pipe.recv)
        except EOFError:
            raise RuntimeError(f"a {self.label} died without a word") from None
        if message[0] == "error":
            raise RuntimeError(f"a {self.label} failed: {message[1]}")
        if message[0] != expected:
            raise RuntimeError(f"a {self.label} said {message[0]!r}, not {expected!r}")
        return message
