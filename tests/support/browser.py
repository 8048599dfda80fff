"""The system's headless Chromium, as the page tests launch it, and what they look at."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ROOT = Path(__file__).resolve().parents[2]
# Screenshots for people to look at (gitignored, kept by CI as artefacts).
ARTIFACTS = ROOT / "build" / "test-artifacts"
# axe-core, from npm (package.json's devDependencies): injected by the tests, never served.
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
# Every Content-Security-Policy violation the page meets, kept for the test to read.
_CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; closed afterwards."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class Screen:
    """A browser context and its page, recording every script error the page throws."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.errors: list[Exception] = []
        page.on("pageerror", lambda error: self.errors.append(error))


async def open_screen(
    browser: Browser,
    *,
    width: int = 1280,
    height: int = 800,
    locale: str = "en-US",
    timezone_id: str = "Europe/Berlin",
    **options: Any,
) -> Screen:
    """A fresh page of `width` x `height` CSS pixels, in its own context."""
    context = await browser.new_context(
        locale=locale,
        timezone_id=timezone_id,
        viewport={"width": width, "height": height},
        **options,
    )
    await context.add_init_script(_CSP_RECORDER)
    return Screen(context, await context.new_page())


async def csp_violations(page: Page) -> list[str]:
    """What the page's Content-Security-Policy refused (directive and blocked URI)."""
    found: list[str] = await page.evaluate("window.__cspViolations ?? []")
    return found


async def axe_violations(
    page: Page, impacts: tuple[str, ...] = ("serious", "critical")
) -> list[str]:
    """axe-core's violations of `impacts` on `page` as it is now, one line each.

    The page's CSP allows no inline script, so the page must come from a context opened with
    `bypass_csp=True` for axe to be injected.
    """
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.add_script_tag(path=AXE)
    results: list[dict[str, Any]] = await page.evaluate(
        """async () => {
          const { violations } = await axe.run(document, { resultTypes: ["violations"] });
          return violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map((n) => n.target.join(" ")),
          }));
        }"""
    )
    return [
        f"{found['impact']} {found['id']}: {found['help']} at {', '.join(found['nodes'][:5])}"
        for found in results
        if found["impact"] in impacts
    ]


def cell(page: Page, metric: str, department: str | None) -> Locator:
    """The element showing `metric` for `department` (`None`: the hospital-wide totals)."""
    return page.locator(f'[data-metric="{metric}"][data-department="{department or ""}"]')


async def save_screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """A screenshot in ARTIFACTS, as `name`.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=path, full_page=full_page, animations="disabled")
    return path


async def save_element_screenshot(element: Locator, name: str) -> Path:
    """A screenshot of one element (a panel, an open menu) in ARTIFACTS, as `name`.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await element.screenshot(path=path, animations="disabled")
    return path


async def scrolls_sideways(page: Page) -> bool:
    """Whether the page is wider than its viewport (it should never be)."""
    return bool(
        await page.evaluate(
            "document.documentElement.scrollWidth > document.documentElement.clientWidth"
        )
    )


# Every visible element with text of its own, whose colour against the first opaque background
# behind it falls short of WCAG AA (4.5:1; 3:1 for large text: 24px, or 18.66px bold).
_CONTRAST = """
() => {
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const linear = (c) => {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  const background = (node) => {
    for (let at = node; at; at = at.parentElement) {
      const colour = rgb(getComputedStyle(at).backgroundColor);
      if (colour.length === 3 || colour[3] === 1) return colour.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  for (const node of document.querySelectorAll("body *")) {
    const own = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
    const shown = node.checkVisibility({ opacityProperty: true, visibilityProperty: true });
    if (!own || !shown) continue;
    const style = getComputedStyle(node);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const [a, b] = [luminance(rgb(style.color)), luminance(background(node))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < (large ? 3 : 4.5)) {
      const text = node.textContent.trim().slice(0, 30);
      failures.push(`${node.tagName}.${node.className} "${text}" ${ratio.toFixed(2)}`);
    }
  }
  return failures;
}
"""


async def contrast_failures(page: Page) -> list[str]:
    """The texts on `page` below WCAG AA contrast (see _CONTRAST)."""
    failures: list[str] = await page.evaluate(_CONTRAST)
    return failures


class Screens:
    """The screens a test opened; `close()` closes them and fails on any script error or CSP
    violation they met."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.opened: list[Screen] = []

    async def open(self, **options: Any) -> Page:
        """A fresh page (`width`, `height`, `locale`, `timezone_id`, context options)."""
        screen = await open_screen(self.browser, **options)
        self.opened.append(screen)
        return screen.page

    async def close(self) -> None:
        refused: list[str] = []
        for screen in self.opened:
            for page in screen.context.pages:
                if not page.is_closed():
                    refused += await csp_violations(page)
            await screen.context.close()
        errors = [error for screen in self.opened for error in screen.errors]
        assert not errors, f"the page threw: {errors}"
        assert not refused, f"the page's CSP refused: {refused}"


Sign = Callable[..., Awaitable[str]]
"""The `sign` fixture: `await sign(role, departments, sub=...)` is a token whose user is
written."""
