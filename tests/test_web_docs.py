"""The REST API's docs at `/docs`: Swagger UI from our own files, under the page's policy."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import async_playwright, expect

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.live import LiveServer


def _policy(response: httpx.Response) -> dict[str, str]:
    return dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )


async def test_docs_page_and_its_assets_are_served_under_the_policy(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        scripts = re.findall(r'<script src="([^"]+)"', page.text)
        styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text)
        assert scripts == ["/static/vendor/swagger-ui-bundle.js", "/static/docs.js"]
        assert styles == ["/static/vendor/swagger-ui.css"]
        for asset, kind in [*((s, "javascript") for s in scripts), (styles[0], "text/css")]:
            response = await client.get(asset)
            assert response.status_code == 200, asset
            assert kind in response.headers["content-type"], asset
        assert "SwaggerUIBundle" in (await client.get("/static/docs.js")).text
        schema = await client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/docs" not in schema.json()["paths"]

    # Every script and stylesheet is a file of our own origin, which is all the policy allows.
    policy = _policy(page)
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"].startswith("'self'")
    assert all(url.startswith("/") and not url.startswith("//") for url in scripts + styles)
    assert len(re.findall(r"<script\b", page.text)) == len(scripts)
    assert "<style" not in page.text
    assert not re.search(r"\s(style|on[a-z]+)=", page.text)


async def test_swagger_ui_lists_and_tries_the_operations_within_the_policy(
    server: LiveServer,
) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            outside: list[str] = []
            page.on(
                "request",
                lambda r: None if r.url.startswith(server.url) else outside.append(r.url),
            )
            await page.add_init_script(
                "window.violations = [];"
                "document.addEventListener('securitypolicyviolation',"
                " (e) => window.violations.push(e.effectiveDirective + ' ' + e.blockedURI));"
            )
            await page.goto(f"{server.url}/docs")
            paths = page.locator(".opblock-summary-path")
            await expect(paths.filter(has_text=re.compile(r"^/api/reports$")).first).to_be_visible()
            await expect(page.locator(".info .title")).to_contain_text("livedash")
            assert await paths.count() > 20
            # Tried from the page, a request goes to this origin, as the policy allows.
            health = page.locator(".opblock").filter(
                has=page.locator(".opblock-summary-path", has_text=re.compile(r"^/health$"))
            )
            await health.locator(".opblock-summary-control").click()
            await health.get_by_role("button", name="Try it out").click()
            await health.get_by_role("button", name="Execute").click()
            answer = health.locator(".live-responses-table tbody .response-col_status")
            await expect(answer).to_have_text("200")
            assert await page.evaluate("window.violations") == []
            assert problems == []
            assert outside == []
        finally:
            await browser.close()
