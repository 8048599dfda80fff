"""Pages of every REST list: a bounded `limit`, a keyset `cursor`, one envelope.

The contract, the same for every list:

- Ask with `limit` (1 to the list's maximum; each list has its default) and, for every page
  after the first, `cursor`: the previous page's `next`, as it was given.
- The answer is a `Page`: `{"items": [...], "next": "<cursor>" | null}` (a list may add fields
  of its own: the notifications' `unread`). `next` is null on the last page. When there is a
  next page, a `Link: </api/...?...&cursor=...>; rel="next"` header (RFC 8288) gives its URL:
  this request's path and query with the new cursor.
- Each list is ordered by a unique key: newest first by id (alerts, notifications, silences),
  or a fixed order (metrics, departments). A cursor holds the last key served, and the next
  page starts strictly after it: rows that arrive (or go) while a client pages never shift a
  page, so no row is served twice or skipped. Rows newer than the first page are not part of
  that walk; start again from the first page to see them.
- There is no `total`: it would cost a second count of the whole list, stale by the next page.
- A cursor is opaque (base64url of a JSON key); one that is not this list's is 422
  `invalid_payload`. Filters may change between pages: the cursor keeps its place.

A list endpoint takes `PageRequest` as a dependency (`pages(default, maximum, kind)`), asks its
store for `page.fetch` rows after `page.after`, and returns `page.of(rows, key)`; a list held in
memory returns `page.within(items, key)`.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations of `pages`'s inner
# function when a route is declared, and as strings they could not name its `maximum`.

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Query, Request, Response
from pydantic import BaseModel, Field

from livedash.errors import InvalidPayload

T = TypeVar("T")
K = TypeVar("K", int, str)
MAX_CURSOR_LENGTH = 200


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    next: str | None = Field(
        description="The `cursor` of the next page; null on the last one. The `Link` header "
        'with `rel="next"` carries the same page as a URL.'
    )


@dataclass(frozen=True, slots=True)
class PageRequest(Generic[K]):
    """Which page a request asks for; builds the answer and its `Link` header."""

    limit: int
    after: K | None
    """The last key the previous page served (None: the first page)."""
    request: Request
    response: Response

    @property
    def fetch(self) -> int:
        """How many rows to read after `after`: one more than the page, to know if there are
        more."""
        return self.limit + 1

    def of(self, rows: Sequence[T], key: Callable[[T], K]) -> Page[T]:
        """The page of `rows`: those after `after`, in the list's order, `fetch` at most."""
        items = list(rows[: self.limit])
        following = encode_cursor(key(items[-1])) if len(rows) > self.limit and items else None
        if following is not None:
            url = self.request.url.include_query_params(cursor=following)
            self.response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
        return Page(items=items, next=following)

    def within(self, items: Sequence[T], key: Callable[[T], K], *, descending: bool) -> Page[T]:
        """The page of a whole list held in memory, ordered by `key` (`descending` or not)."""
        after = self.after
        if after is not None:
            items = [
                item for item in items if (key(item) < after if descending else key(item) > after)
            ]
        return self.of(items[: self.fetch], key)


def encode_cursor(key: int | str) -> str:
    """An opaque cursor for `key`."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: type[K]) -> K:
    """The key of a cursor `encode_cursor` made; `InvalidPayload` for anything else."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if type(key) is not kind:  # bool is an int, but no cursor of ours
        raise InvalidPayload("cursor: not a cursor of this list; give a page's `next` as it came")
    return key


def pages(default: int, maximum: int, kind: type[K]) -> Callable[..., PageRequest[K]]:
    """A dependency reading `limit` (1 to `maximum`, `default`) and `cursor` of a list keyed
    by `kind`."""

    def page_request(
        request: Request,
        response: Response,
        limit: Annotated[
            int, Query(ge=1, le=maximum, description=f"Items per page (at most {maximum}).")
        ] = default,
        cursor: Annotated[
            str | None,
            Query(
                max_length=MAX_CURSOR_LENGTH,
                description="The previous page's `next`, to read the page after it.",
            ),
        ] = None,
    ) -> PageRequest[K]:
        after = decode_cursor(cursor, kind) if cursor is not None else None
        return PageRequest(limit, after, request, response)

    return page_request
