"""XEP-0059 result set management and XEP-0060 ``max_items`` over an ordered list.

This is the reference behaviour of the cache (its SQL queries must agree with it), and
it also pages upstream results from services that ignore RSM.

Ordering: the result set is the node's items oldest first, so index 0 is the oldest
item, and every page lists its items in that chronological order; ``first`` is the
oldest item of the page and ``last`` the newest (XEP-0059 §2, XEP-0060 §6.5.4).
Without an anchor a request gets the first page, i.e. the oldest items; an empty
``<before/>`` gets the last page, i.e. the newest. ``max_items`` (XEP-0060 §6.5.7)
first narrows the result set to the newest N items; RSM then pages within them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from xml.etree.ElementTree import Element, SubElement

from component.xmpp.namespaces import RSM_NS

_R = f"{{{RSM_NS}}}"
_XS_INT_MAX = 2**31 - 1  # the schema types max and index as xs:int
_DIGITS = re.compile(r"\s*([0-9]{1,10})\s*")

T = TypeVar("T")


class PagingError(Exception):
    """A request that cannot be paged; ``condition`` is the stanza error to return."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class RsmRequest:
    """The paging part of a request. ``before=""`` asks for the last page."""

    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("max", self.max), ("index", self.index)):
            if value is not None and value < 0:
                raise PagingError("bad-request", f"RSM <{name}/> must not be negative")
        if self.after == "":
            raise PagingError("bad-request", "RSM <after/> needs the UID of an item")
        anchors = [name for name in ("after", "before", "index") if getattr(self, name) is not None]
        if len(anchors) > 1:
            listed = " and ".join(f"<{name}/>" for name in anchors)
            raise PagingError("bad-request", f"RSM {listed} cannot be combined")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a result set, with what the RSM reply needs.

    ``first``, ``first_index`` and ``last`` are None for an empty page. ``count`` is
    the size of the result set (after ``max_items``). ``complete`` is true when the
    page holds the whole result set, i.e. nothing was left out.
    """

    items: tuple[T, ...]
    first: str | None
    first_index: int | None
    last: str | None
    count: int
    complete: bool


def parse_rsm(elem: Element | None) -> RsmRequest | None:
    """Read a ``{http://jabber.org/protocol/rsm}set`` element; None if there is none.

    Raises PagingError("bad-request", ...) on malformed or contradictory values.
    """
    if elem is None:
        return None
    if elem.tag != f"{_R}set":
        raise PagingError("bad-request", f"expected an RSM <set/>, got {elem.tag!r}")
    values: dict[str, str] = {}
    for child in elem:
        if not isinstance(child.tag, str) or not child.tag.startswith(_R):
            continue
        name = child.tag[len(_R) :]
        if name not in ("max", "after", "before", "index"):
            continue  # count/first/last belong in replies; ignoring them is harmless
        if name in values:
            raise PagingError("bad-request", f"RSM <{name}/> appears more than once")
        values[name] = child.text or ""
    return RsmRequest(
        max=_integer(values, "max"),
        after=values.get("after"),
        before=values.get("before"),
        index=_integer(values, "index"),
    )


def _integer(values: dict[str, str], name: str) -> int | None:
    if name not in values:
        return None
    match = _DIGITS.fullmatch(values[name])
    if match is None:
        text = f"RSM <{name}/> must be a non-negative integer, not {values[name][:20]!r}"
        raise PagingError("bad-request", text)
    number = int(match.group(1))
    if number > _XS_INT_MAX:
        raise PagingError("bad-request", f"RSM <{name}/> is too large")
    return number


def paginate(
    ids_oldest_first: Sequence[T],
    key: Callable[[T], str],
    request: RsmRequest | None,
    max_items: int | None,
) -> Page[T]:
    """Select the page of ``ids_oldest_first`` that the request asks for.

    ``key`` gives an item's UID (its pubsub item id). Raises PagingError with
    "bad-request" for a non-positive ``max_items`` and "item-not-found" for an
    ``after``/``before`` UID that is not in the result set.
    """
    if max_items is not None and max_items < 1:
        raise PagingError("bad-request", "max_items must be a positive integer")
    result = ids_oldest_first[-max_items:] if max_items is not None else ids_oldest_first
    count = len(result)
    start, end = _bounds(result, key, request or RsmRequest(), count)
    items = tuple(result[start:end])
    if not items:
        return Page(items, None, None, None, count, complete=count == 0)
    return Page(items, key(items[0]), start, key(items[-1]), count, len(items) == count)


def _bounds(
    result: Sequence[T], key: Callable[[T], str], request: RsmRequest, count: int
) -> tuple[int, int]:
    """The slice of the result set that the request designates."""
    size = request.max
    if request.before is not None:
        end = _position(result, key, request.before) if request.before else count
        return (0 if size is None else max(0, end - size)), end
    if request.after is not None:
        start = _position(result, key, request.after) + 1
    else:
        start = min(request.index or 0, count)
    return start, count if size is None else min(count, start + size)


def _position(result: Sequence[T], key: Callable[[T], str], uid: str) -> int:
    for position, item in enumerate(result):
        if key(item) == uid:
            return position
    raise PagingError("item-not-found", f"no item with id {uid!r} in this result set")


def render_rsm(page: Page[T]) -> Element:
    """The ``<set/>`` of a reply: first (with its index), last and count."""
    rsm = Element(f"{_R}set")
    # Child order follows the XEP-0059 examples (first, last, count), which is what
    # clients are tested against, rather than the schema's alphabetical sequence.
    if page.first is not None and page.last is not None:
        first = SubElement(rsm, f"{_R}first")
        first.text = page.first
        if page.first_index is not None:
            first.set("index", str(page.first_index))
        SubElement(rsm, f"{_R}last").text = page.last
    SubElement(rsm, f"{_R}count").text = str(page.count)
    return rsm
