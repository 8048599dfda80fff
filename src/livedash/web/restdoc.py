"""The REST half of docs/api.md, generated from the app's own OpenAPI schema and the problem
types, so that it cannot drift from the routes."""

from __future__ import annotations

import json
from typing import Any

from livedash.errors import ClientError
from livedash.web.problems import PROBLEM_JSON, STATUS_OF, TITLES, TYPE_BASE, problem

_OTHER_STATUSES = {
    "bad_request": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "headers_too_large": 431,
    "internal": 500,
}
_METHODS = ("get", "post", "put", "delete")

INTRO = [
    "# REST API",
    "",
    "Everything under `/api` answers JSON and needs an access token (`Authorization: Bearer"
    " <token>`, from `POST /api/auth/login` or `livedash token`), except sign-in itself and"
    " ingest (an API key). Roles and departments are the sockets' (see Access above): a"
    " department outside the caller's is `forbidden` (403); a code that names no department"
    " is `unknown_department` (404) to a super_admin and `forbidden` to anyone else, as the"
    " sockets never say which departments exist. `hospital` names the hospital-wide totals"
    " (super_admins only). Each user's requests count against `LIVEDASH_RATE_LIMIT_REST`."
    " The OpenAPI schema, which every request and response is validated against in the"
    " tests, is at `/openapi.json`: the schemas named below are among its components.",
    "",
    "## Errors: problem details",
    "",
    f"Every error, of every endpoint, is RFC 9457 problem details (`{PROBLEM_JSON}`):",
    "",
    "- `type`: `https://livedash.dev/problems/<code>`, one per problem type below; an"
    " identifier to compare, not a page to fetch.",
    "- `title`: the problem type's summary, the same every time; `status`: the HTTP status.",
    "- `detail`: what was wrong with this request. It never repeats the values sent (a"
    " refused field is named, not echoed).",
    "- `instance`: the request's path.",
    "- `code`: the same code a socket's `error` event carries for the same refusal.",
    "- `retry_after` (seconds), with `rate_limited` and `unavailable`; the `Retry-After`"
    " header says the same. A 401 also carries `WWW-Authenticate`.",
    "",
]

PAGES = [
    "## Pages",
    "",
    "Every list comes in pages, the same way:",
    "",
    "- Ask with `limit` (1 to the list's maximum; each has its default) and, for the pages"
    " after the first, `cursor`: the previous page's `next`, as given.",
    '- The answer is `{"items": [...], "next": "<cursor>" | null}` (a list may add fields:'
    " the notifications' `unread`). `next` is null on the last page. When there is a next"
    ' page, the `Link` header gives its URL: `</api/alerts?...&cursor=...>; rel="next"`.',
    "- Lists are ordered by a unique key: newest first by id (alerts, notifications,"
    " silences), the catalogue's order (metrics), by code (departments). The next page"
    " starts strictly after the last key served, so rows that arrive while a client walks"
    " the pages never make it skip or repeat a row; rows newer than the first page are seen"
    " by starting again.",
    "- No `total`: it would cost a count of the whole list, stale by the next page.",
    "- A cursor is opaque; one the list did not give is `invalid_payload` (422).",
    "",
]


def _problem_types() -> list[str]:
    statuses: dict[str, int] = dict(_OTHER_STATUSES)
    for kind in _client_errors():
        status = next((code for error, code in STATUS_OF if issubclass(kind, error)), 400)
        statuses.setdefault(kind.code, status)
    rows = [
        f"| `{code}` | {statuses[code]} | {title} |"
        for code, title in sorted(TITLES.items(), key=lambda item: (statuses[item[0]], item[0]))
    ]
    example = problem(
        403, "forbidden", "not allowed for this token: 'CARD'", instance="/api/snapshot"
    )
    return [
        "Example:",
        "",
        "```json",
        json.dumps(example.model_dump(exclude_none=True), indent=2),
        "```",
        "",
        f"### Problem types (`{TYPE_BASE}<code>`)",
        "",
        "| code | status | title |",
        "| --- | --- | --- |",
        *rows,
        "",
    ]


def _client_errors() -> list[type[ClientError]]:
    found: list[type[ClientError]] = []
    waiting: list[type[ClientError]] = [ClientError]
    while waiting:
        kind = waiting.pop()
        found.append(kind)
        waiting.extend(kind.__subclasses__())
    return found


def _schema_name(response: dict[str, Any]) -> str | None:
    for content in response.get("content", {}).values():
        reference = str(content.get("schema", {}).get("$ref", ""))
        if reference:
            return reference.rsplit("/", 1)[-1]
    return None


def _endpoint(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    description = operation.get("description") or operation.get("summary") or ""
    if description:
        lines += [" ".join(description.split()), ""]
    parameters = [p for p in operation.get("parameters", []) if p["in"] in ("path", "query")]
    if parameters:
        lines += ["| parameter | in | meaning |", "| --- | --- | --- |"]
        for parameter in parameters:
            optional = "" if parameter.get("required") else " (optional)"
            meaning = " ".join(parameter.get("description", "").split())
            lines.append(f"| `{parameter['name']}`{optional} | {parameter['in']} | {meaning} |")
        lines.append("")
    responses = operation.get("responses", {})
    answers = [
        f"{status} `{_schema_name(response)}`" if _schema_name(response) else status
        for status, response in responses.items()
        if int(status) < 400
    ]
    errors = sorted(status for status in responses if int(status) >= 400)
    lines += [f"Answers: {', '.join(answers)}; problems: {', '.join(errors)}.", ""]
    return lines


def render_rest_doc(openapi: dict[str, Any]) -> str:
    """The REST reference (Markdown) of the app whose OpenAPI schema is `openapi`."""
    lines = [*INTRO, *_problem_types(), *PAGES, "## Endpoints", ""]
    for path, operations in openapi["paths"].items():
        for method in _METHODS:
            if method in operations:
                lines += _endpoint(method, path, operations[method])
    return "\n".join(lines)
