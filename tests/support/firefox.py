"""Debian's Firefox ESR, headless, as the Firefox page tests drive it: through
tests/support/firefox.mjs (puppeteer-core over WebDriver BiDi), one JSON request a line.

Not Playwright: its `firefox` needs Playwright's own patched build (Juggler), which may not be
downloaded here, and its WebDriver BiDi mode (`channel="moz-firefox"`) opens every context with
`emulation.setMediaFeaturesOverride`, which Firefox ESR 153 answers with "unknown command".
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.browser import ARTIFACTS, ROOT

DRIVER = ROOT / "tests" / "support" / "firefox.mjs"
# Past a request's own timeout: a driver that stops answering fails the test, never hangs it.
GRACE_SECONDS = 30.0


class FirefoxError(AssertionError):
    """Firefox did not do or show what a request asked (the driver's message says what it saw)."""


class Firefox:
    """The driver process and its browser; `open()` gives pages."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("the Firefox driver must be started with pipes for stdin and stdout")
        self._process = process
        self._stdin, self._stdout = process.stdin, process.stdout
        self._ids = itertools.count(1)
        self.pages: list[FirefoxPage] = []

    async def request(self, op: str, **args: Any) -> Any:
        """Send one request and return its answer's value; a refused one raises FirefoxError."""
        ask = {"id": next(self._ids), "op": op, **args}
        self._stdin.write(json.dumps(ask).encode() + b"\n")
        await self._stdin.drain()
        wait = args.get("timeout", 0) / 1000 + GRACE_SECONDS
        line = await asyncio.wait_for(self._stdout.readline(), wait)
        if not line:
            raise FirefoxError(f"the Firefox driver exited (code {await self._process.wait()})")
        answer = json.loads(line)
        if answer["id"] != ask["id"]:
            raise FirefoxError(f"answer {answer['id']} to request {ask['id']}")
        if not answer["ok"]:
            raise FirefoxError(f"{op}: {answer['error']}")
        return answer["value"]

    def close_input(self) -> None:
        """Tell the driver the test is done: it closes Firefox, removes its profile and exits."""
        self._stdin.close()

    async def version(self) -> str:
        """The browser's name and version, as "firefox/153.8.0"."""
        return str(await self.request("version"))

    async def open(
        self, *, width: int = 1280, height: int = 800, timezone: str = "Europe/Berlin"
    ) -> FirefoxPage:
        """A fresh page of `width` x `height` CSS pixels, in its own browser context."""
        page = FirefoxPage(
            self, await self.request("open", width=width, height=height, timezone=timezone)
        )
        self.pages.append(page)
        return page


class FirefoxPage:
    """One page; the waits end as soon as the page shows what they expect."""

    def __init__(self, firefox: Firefox, name: str) -> None:
        self._firefox = firefox
        self.name = name

    async def _do(self, op: str, **args: Any) -> Any:
        return await self._firefox.request(op, page=self.name, **args)

    async def goto(self, url: str) -> None:
        await self._do("goto", url=url)

    async def fill(self, selector: str, text: str) -> None:
        await self._do("fill", selector=selector, text=text)

    async def click(self, selector: str) -> None:
        await self._do("click", selector=selector)

    async def select(self, selector: str, value: str) -> None:
        """Choose the option of `value` in the select `selector`, as a person would."""
        await self._do("select", selector=selector, value=value)

    async def expect_text(self, selector: str, text: str, within_ms: int = 5000) -> None:
        """Wait until the first element of `selector` reads `text` (whitespace collapsed)."""
        await self._do("text", selector=selector, expected=text, timeout=within_ms)

    async def expect_texts(self, selector: str, texts: list[str], within_ms: int = 5000) -> None:
        """Wait until the elements of `selector` read `texts`, in order."""
        await self._do("texts", selector=selector, expected=texts, timeout=within_ms)

    async def expect_count(self, selector: str, count: int, within_ms: int = 5000) -> None:
        """Wait until `count` elements match `selector`."""
        await self._do("count", selector=selector, expected=count, timeout=within_ms)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        return await self._do("evaluate", expression=expression)

    async def url(self) -> str:
        return str(await self._do("url"))

    async def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """A screenshot in build/test-artifacts, as `name`.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self._do("screenshot", path=str(path), fullPage=full_page)
        return path

    async def problems(self) -> list[str]:
        """The script errors, console errors and CSP violations the page has met."""
        found: list[str] = await self._do("problems")
        return found


@asynccontextmanager
async def firefox() -> AsyncIterator[Firefox]:
    """Debian's Firefox ESR, headless, with a fresh profile; closed afterwards."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    browser = Firefox(process)
    try:
        await browser.version()  # answered once Firefox listens
        yield browser
    finally:
        browser.close_input()
        try:
            await asyncio.wait_for(process.wait(), GRACE_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
