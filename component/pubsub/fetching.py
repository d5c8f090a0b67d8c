"""Fetching a whole node page by page, newest first (pure: pages in, decisions out).

Herald asks for the newest page (RSM ``<before/>`` empty), then for the page before
each page's ``<first/>``, until it holds the limit or reaches the node's start. An
upstream that ignores RSM (Prosody 0.12) answers the first request with every item,
or with the newest ``max_items`` where it honours that (Prosody does; the request
asks for one past the limit, so more than the limit means older ones were left).
Whether items were left upstream decides whether the node is truncated, so every
doubt counts as "more": an upstream that repeats a page, or gives no anchor to page
on, leaves the node truncated unless its RSM ``<count/>`` shows every item was
collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from component.pubsub.stanzas import ReceivedItem

PAGE = 100


@dataclass(frozen=True)
class FetchedPage:
    """One answer to an items request that asked for RSM paging."""

    items: list[ReceivedItem]
    paged: bool  # the answer carried an RSM <set/>
    first: str | None = None  # the page's <first/>: the anchor for the page before
    first_index: int | None = None
    count: int | None = None  # the node's item count, where upstream gives it


@dataclass
class FullFetch:
    """Collects pages, newest first, and says what to ask for next."""

    limit: int
    collected: list[ReceivedItem] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _count: int | None = None
    _at_start: bool = False

    def add(self, page: FetchedPage) -> str | None:
        """Take a page; the next <before/> anchor, or None when the fetch is over."""
        if not page.paged:
            # Every item at once, or the newest max_items: past the limit, result()
            # tells that older ones may be left.
            self.collected = list(page.items)
            self._at_start = True
            return None
        if page.count is not None:
            self._count = page.count
        fresh = [item for item in page.items if item.item_id not in self._seen]
        if not fresh:
            # An empty page is the start; a repeated one means upstream ignored the
            # anchor, and whatever is older is out of reach.
            self._at_start = not page.items
            return None
        self._seen.update(item.item_id for item in fresh)
        self.collected = fresh + self.collected
        # A short page is not proof of the start: a server may cap its pages. The count
        # decides only where no index says otherwise.
        self._at_start = page.first_index == 0 or (
            page.first_index is None
            and self._count is not None
            and len(self.collected) >= self._count
        )
        if self._at_start or len(self.collected) >= self.limit or page.first is None:
            return None
        return page.first

    def result(self) -> tuple[list[ReceivedItem], bool]:
        """The newest items up to the limit, oldest first; and whether more are upstream."""
        kept = self.collected[-self.limit :]
        return kept, len(self.collected) > self.limit or not self._at_start
