"""XEP-0059 RSM and XEP-0060 max_items over an ordered list (the cache's reference)."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

import pytest

from component.paging import (
    Page,
    PagingError,
    RsmRequest,
    paginate,
    parse_rsm,
    render_rsm,
)

R = "{http://jabber.org/protocol/rsm}"
IDS = [f"i{n}" for n in range(10)]  # oldest first


def ids(first: int, stop: int) -> tuple[str, ...]:
    return tuple(IDS[first:stop])


def page_of(items: tuple[str, ...], first_index: int | None, count: int = 10) -> Page[str]:
    if not items:
        return Page((), None, None, None, count, complete=count == 0)
    return Page(items, items[0], first_index, items[-1], count, len(items) == count)


@pytest.mark.parametrize(
    ("request_", "max_items", "expected"),
    [
        (None, None, page_of(ids(0, 10), 0)),
        (None, 3, page_of(ids(7, 10), 0, count=3)),  # max_items: the newest, oldest first
        (None, 20, page_of(ids(0, 10), 0)),
        (RsmRequest(), None, page_of(ids(0, 10), 0)),
        (RsmRequest(max=3), None, page_of(ids(0, 3), 0)),  # no anchor: the first page
        (RsmRequest(max=30), None, page_of(ids(0, 10), 0)),
        (RsmRequest(max=3, after="i2"), None, page_of(ids(3, 6), 3)),
        (RsmRequest(max=3, after="i8"), None, page_of(ids(9, 10), 9)),
        (RsmRequest(max=3, after="i9"), None, page_of((), None)),
        (RsmRequest(after="i6"), None, page_of(ids(7, 10), 7)),
        (RsmRequest(max=3, before=""), None, page_of(ids(7, 10), 7)),  # the last page
        (RsmRequest(before=""), None, page_of(ids(0, 10), 0)),
        (RsmRequest(max=3, before="i7"), None, page_of(ids(4, 7), 4)),
        (RsmRequest(max=3, before="i1"), None, page_of(ids(0, 1), 0)),
        (RsmRequest(max=3, before="i0"), None, page_of((), None)),
        (RsmRequest(before="i3"), None, page_of(ids(0, 3), 0)),
        (RsmRequest(max=3, index=5), None, page_of(ids(5, 8), 5)),
        (RsmRequest(max=3, index=0), None, page_of(ids(0, 3), 0)),
        (RsmRequest(index=8), None, page_of(ids(8, 10), 8)),
        (RsmRequest(max=3, index=10), None, page_of((), None)),
        (RsmRequest(max=3, index=99), None, page_of((), None)),
        (RsmRequest(max=0), None, page_of((), None)),  # count only
        (RsmRequest(max=0, before=""), None, page_of((), None)),
        (RsmRequest(max=0, after="i3"), None, page_of((), None)),
        (RsmRequest(max=2), 4, page_of(ids(6, 8), 0, count=4)),  # RSM within max_items
        (RsmRequest(max=2, before=""), 4, page_of(ids(8, 10), 2, count=4)),
        (RsmRequest(max=2, after="i7"), 4, page_of(ids(8, 10), 2, count=4)),
        (RsmRequest(max=0), 4, page_of((), None, count=4)),
    ],
)
def test_paginate(request_: RsmRequest | None, max_items: int | None, expected: Page[str]) -> None:
    assert paginate(IDS, str, request_, max_items) == expected


@pytest.mark.parametrize(
    "request_", [None, RsmRequest(), RsmRequest(max=5), RsmRequest(max=0), RsmRequest(before="")]
)
def test_empty_result_set(request_: RsmRequest | None) -> None:
    assert paginate([], str, request_, None) == Page((), None, None, None, 0, complete=True)


@pytest.mark.parametrize(
    ("request_", "max_items", "condition"),
    [
        (RsmRequest(max=3, after="gone"), None, "item-not-found"),
        (RsmRequest(max=3, before="gone"), None, "item-not-found"),
        (RsmRequest(max=0, after="gone"), None, "item-not-found"),
        (RsmRequest(after="i2"), 4, "item-not-found"),  # outside the newest 4
        (None, 0, "bad-request"),
        (None, -1, "bad-request"),
    ],
)
def test_paginate_errors(
    request_: RsmRequest | None, max_items: int | None, condition: str
) -> None:
    with pytest.raises(PagingError) as caught:
        paginate(IDS, str, request_, max_items)
    assert caught.value.condition == condition
    assert caught.value.text


def test_generic_items_use_the_key() -> None:
    items = [(f"id{n}", f"<xml {n}/>") for n in range(5)]
    page = paginate(items, lambda item: item[0], RsmRequest(max=2, before="id4"), None)
    assert page == Page((items[2], items[3]), "id2", 2, "id3", 5, complete=False)


@pytest.mark.parametrize("size", [1, 3, 4, 10, 11])
def test_walking_every_page_returns_every_item_once(size: int) -> None:
    forward: list[str] = []
    page = paginate(IDS, str, RsmRequest(max=size), None)
    while page.items:
        forward.extend(page.items)
        assert page.last is not None
        page = paginate(IDS, str, RsmRequest(max=size, after=page.last), None)
    assert forward == IDS

    backward: list[str] = []
    page = paginate(IDS, str, RsmRequest(max=size, before=""), None)
    while page.items:
        backward[:0] = page.items
        assert page.first is not None
        page = paginate(IDS, str, RsmRequest(max=size, before=page.first), None)
    assert backward == IDS


RSM_NS = "xmlns='http://jabber.org/protocol/rsm'"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", RsmRequest()),
        ("<max>10</max>", RsmRequest(max=10)),
        ("<max>\n  0\n</max>", RsmRequest(max=0)),
        (
            "<max>10</max><after>peterpan@neverland.lit</after>",
            RsmRequest(10, after="peterpan@neverland.lit"),
        ),
        ("<max>10</max><before/>", RsmRequest(max=10, before="")),
        ("<before>i3</before>", RsmRequest(before="i3")),
        ("<max>10</max><index>371</index>", RsmRequest(max=10, index=371)),
        ("<max>2147483647</max>", RsmRequest(max=2**31 - 1)),
        # Reply-only elements and foreign elements are ignored.
        ("<max>5</max><count>3</count><first index='0'>x</first>", RsmRequest(max=5)),
        ("<max xmlns='urn:other'>nope</max>", RsmRequest()),
    ],
)
def test_parse_rsm(body: str, expected: RsmRequest) -> None:
    assert parse_rsm(fromstring(f"<set {RSM_NS}>{body}</set>")) == expected


def test_parse_rsm_absent() -> None:
    assert parse_rsm(None) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<max>-1</max>", "non-negative integer"),
        ("<max>ten</max>", "non-negative integer"),
        ("<max>1.5</max>", "non-negative integer"),
        ("<max>+5</max>", "non-negative integer"),
        ("<max>1_0</max>", "non-negative integer"),
        ("<max/>", "non-negative integer"),
        ("<index>-3</index>", "non-negative integer"),
        ("<max>2147483648</max>", "too large"),
        ("<after>a</after><before>b</before>", "<after/> and <before/>"),
        ("<after>a</after><index>2</index>", "<after/> and <index/>"),
        ("<before/><index>2</index>", "<before/> and <index/>"),
        ("<max>1</max><max>2</max>", "more than once"),
        ("<after/>", "UID"),
    ],
)
def test_parse_rsm_rejects_malformed_sets(body: str, message: str) -> None:
    with pytest.raises(PagingError, match=message) as caught:
        parse_rsm(fromstring(f"<set {RSM_NS}>{body}</set>"))
    assert caught.value.condition == "bad-request"


def test_parse_rsm_rejects_other_elements() -> None:
    with pytest.raises(PagingError, match="expected an RSM"):
        parse_rsm(fromstring("<set xmlns='urn:other'/>"))


@pytest.mark.parametrize(
    "kwargs",
    [{"max": -1}, {"index": -1}, {"after": ""}, {"after": "a", "before": ""}],
)
def test_rsm_request_validates_itself(kwargs: dict[str, object]) -> None:
    with pytest.raises(PagingError):
        RsmRequest(**kwargs)  # type: ignore[arg-type]


def test_render_rsm_page() -> None:
    rsm = render_rsm(paginate(IDS, str, RsmRequest(max=3, after="i2"), None))
    assert rsm.tag == f"{R}set"
    assert [child.tag for child in rsm] == [f"{R}first", f"{R}last", f"{R}count"]
    assert (rsm[0].text, rsm[0].get("index")) == ("i3", "3")
    assert (rsm[1].text, rsm[2].text) == ("i5", "10")


def test_render_rsm_count_only() -> None:
    rsm = render_rsm(paginate(IDS, str, RsmRequest(max=0), None))
    assert [(child.tag, child.text) for child in rsm] == [(f"{R}count", "10")]
