"""Maps langgraph-style `limit`/`offset` onto the API's `page_size`/`page_token` paging."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

_T = TypeVar("_T")

MAX_PAGE_SIZE: Final = 1000
"""The largest page the server returns."""

Fetch = Callable[[int, str], Awaitable[tuple[Sequence[_T], str]]]
"""Fetches one page: `(page_size, page_token) -> (items, next_page_token)`."""


async def page_through(fetch: Fetch[_T], *, limit: int, offset: int) -> list[_T]:
    """Returns items `offset` to `offset + limit` of a listing, fetching as few pages as needed.

    Page tokens are opaque, so skipping `offset` items means reading them.
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
    wanted = offset + limit
    items: list[_T] = []
    token = ""
    while len(items) < wanted:
        page, token = await fetch(min(wanted - len(items), MAX_PAGE_SIZE), token)
        items.extend(page)
        if not token or not page:
            break
    return items[offset:wanted]
