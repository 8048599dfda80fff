"""What REST tests share: problem details as a client reads them, and walking a list's pages."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from livedash.web.problems import PROBLEM_JSON, TYPE_BASE, Problem


def problem_of(response: httpx.Response, status: int, code: str | None = None) -> Problem:
    """`response`'s problem details, once it is one of `status` (and `code`) in every part:
    the media type, `type` from `code`, `status` repeated, `instance` the path asked for."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    problem = Problem.model_validate_json(response.content)
    assert problem.status == status
    assert problem.type == TYPE_BASE + problem.code
    assert problem.title
    assert problem.detail
    assert problem.instance == response.request.url.raw_path.split(b"?")[0].decode()
    if code is not None:
        assert problem.code == code, problem
    return problem


Hook = Callable[[int], Awaitable[None]]


async def walk(
    http: httpx.AsyncClient,
    path: str,
    headers: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
    *,
    between: Hook | None = None,
) -> list[dict[str, Any]]:
    """Every item of a list, page after page by its `Link` header (checked against `next`);
    `between(n)` runs after the n-th page."""
    items: list[dict[str, Any]] = []
    response = await http.get(path, headers=headers, params=params)
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        pages += 1
        link = response.headers.get("link")
        if page["next"] is None:
            assert link is None
            return items
        assert link is not None
        found = re.fullmatch(r'<([^>]+)>; rel="next"', link)
        assert found is not None, link
        following = httpx.URL(found.group(1))
        assert following.params["cursor"] == page["next"]
        if between is not None:
            await between(pages)
        response = await http.get(str(following), headers=headers)
