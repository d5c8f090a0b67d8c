"""Search core: query parsing, the form, result messages and <fin/> (golden XML)."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET
from xml.etree.ElementTree import canonicalize

import pytest

from component.paging import Page, RsmRequest
from component.pubsub.search import (
    PAGE_LIMIT,
    SearchError,
    SearchQuery,
    add_search_features,
    fin_element,
    form_element,
    parse_query,
    result_messages,
)
from component.search_text import document, field_tag, payload_text, terms, words
from component.storage.records import ItemRecord
from component.xmpp.xmltext import serialize

MAM = "urn:xmpp:mam:2"
T = datetime(2026, 12, 7, 10, 0, 1, 500000, tzinfo=UTC)


def same(got: ET.Element | str, expected: str) -> None:
    text = got if isinstance(got, str) else serialize(got)
    assert canonicalize(text, strip_text=True) == canonicalize(expected, strip_text=True)


def query(body: str = "", attrs: str = "node='blog'") -> ET.Element:
    return ET.fromstring(f"<query xmlns='{MAM}' {attrs}>{body}</query>")


def form(*fields: tuple[str, str]) -> str:
    inner = "".join(f"<field var='{var}'><value>{value}</value></field>" for var, value in fields)
    return (
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{MAM}</value></field>{inner}</x>"
    )


def test_words_fold_case_and_accents_and_split_on_punctuation() -> None:
    assert words("Ça MARCHE, l'été_2026!") == ["ca", "marche", "l", "ete", "2026"]
    assert payload_text("<entry xmlns='a'><t>Hello</t><c>brave world</c></entry>").split() == [
        "Hello",
        "brave",
        "world",
    ]
    assert payload_text("") == ""


def test_document_tags_parsed_words_with_their_key() -> None:
    doc = document("<e xmlns='a'>Fox</e>", {"title": "Quick Fox", "tags": ["a b"], "n": None})
    tag = field_tag("title")
    tags = field_tag("tags")
    assert doc.split() == ["fox", tag + "quick", tag + "fox", tags + "a", tags + "b"]
    assert terms("quick", "title") == [tag + "quick"]
    assert len(field_tag("x")) == len(field_tag("a much longer key"))


def test_a_full_query() -> None:
    parsed = parse_query(
        query(
            form(
                ("start", "2026-12-07T10:00:00Z"),
                ("end", "2026-12-07T12:00:00+01:00"),
                ("{urn:xmpp:fulltext:0}fulltext", "quick fox"),
                ("{urn:herald:parsed:0}title", "hello"),
            )
            + "<set xmlns='http://jabber.org/protocol/rsm'><max>5</max><before/></set>"
            + "<flip-page/>",
            "node='blog' queryid='q1'",
        ),
        "set",
    )
    assert parsed == SearchQuery(
        "blog",
        "q1",
        start=datetime(2026, 12, 7, 10, tzinfo=UTC),
        end=datetime(2026, 12, 7, 11, tzinfo=UTC),
        fulltext="quick fox",
        parsed=(("title", "hello"),),
        rsm=RsmRequest(max=5, before=""),
        flip=True,
    )
    assert parsed.terms == ("quick", "fox", field_tag("title") + "hello")


def test_defaults_and_the_page_limit() -> None:
    assert parse_query(query(), "set") == SearchQuery("blog")
    assert parse_query(query(), "set").rsm.max == PAGE_LIMIT
    big = "<set xmlns='http://jabber.org/protocol/rsm'><max>100000</max></set>"
    assert parse_query(query(big), "set").rsm.max == PAGE_LIMIT
    assert parse_query(query(), "get").form


def test_with_names_the_publisher_normalised() -> None:
    # XEP-0313: in an archive that is not a user's, 'with' matches the publisher.
    full = parse_query(query(form(("with", "Juliet@capulet.lit/Balcony"))), "set")
    assert full.publisher == "juliet@capulet.lit/Balcony"
    assert parse_query(query(form(("with", "juliet@capulet.lit"))), "set").publisher == (
        "juliet@capulet.lit"
    )


X = "<x xmlns='jabber:x:data' type='submit'>"
BAD_QUERIES = [
    ("", "", "feature-not-implemented"),
    (form(("{urn:example}unknown", "1")), "node='n'", "feature-not-implemented"),
    (form(("with", "juliet@")), "node='n'", "bad-request"),
    (form(("with", "")), "node='n'", "bad-request"),
    (form(("start", "yesterday")), "node='n'", "bad-request"),
    (form(("start", "2026-12-07T10:00:00")), "node='n'", "bad-request"),
    (form(("start", "2026-12-08T00:00Z"), ("end", "2026-12-07T00:00Z")), "node='n'", "bad-request"),
    (form(("{urn:xmpp:fulltext:0}fulltext", " ,;")), "node='n'", "bad-request"),
    (f"{X}<field><value/></field></x>", "node='n'", "bad-request"),
    (f"{X}<field var='FORM_TYPE'><value>urn:other</value></field></x>", "node='n'", "bad-request"),
    ("<set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set>", "node='n'", "bad-request"),
]


@pytest.mark.parametrize(("body", "attrs", "condition"), BAD_QUERIES)
def test_bad_queries_get_the_error_the_xep_names(body: str, attrs: str, condition: str) -> None:
    with pytest.raises(SearchError) as info:
        parse_query(query(body, attrs), "set")
    print(f"{condition}: {info.value.text}")
    assert info.value.condition == condition
    assert info.value.text


def test_the_form_golden() -> None:
    same(
        form_element("blog", ["author", "title"]),
        f"<query xmlns='{MAM}' node='blog'><x xmlns='jabber:x:data' type='form'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
        "<field var='with' type='jid-single'/>"
        "<field var='start' type='text-single'/><field var='end' type='text-single'/>"
        "<field var='{urn:xmpp:fulltext:0}fulltext' type='text-single'/>"
        "<field var='{urn:herald:parsed:0}author' type='text-single'/>"
        "<field var='{urn:herald:parsed:0}title' type='text-single'/></x></query>",
    )


def item(item_id: str) -> ItemRecord:
    return ItemRecord(item_id, f"<entry xmlns='a'>{item_id}</entry>", None, "o@x", T, T)


def test_result_messages_golden() -> None:
    (message,) = result_messages(SearchQuery("blog", "q&1"), "pubsub.x", "a@x/r", [item("i1")])
    same(
        message,
        "<message from='pubsub.x' to='a@x/r'>"
        f"<result xmlns='{MAM}' queryid='q&amp;1' id='i1'>"
        "<forwarded xmlns='urn:xmpp:forward:0'>"
        "<delay xmlns='urn:xmpp:delay' stamp='2026-12-07T10:00:01.500000Z'/>"
        "<message xmlns='jabber:client'>"
        "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='blog'>"
        "<item id='i1' publisher='o@x'><entry xmlns='a'>i1</entry></item>"
        "</items></event></message></forwarded></result></message>",
    )
    flipped = result_messages(SearchQuery("b", flip=True), "p", "a", [item("1"), item("2")])
    assert ['id="2"' in m for m in flipped] == [True, False]


def page(first_index: int | None, ids: list[str], count: int) -> Page[ItemRecord]:
    items = tuple(item(i) for i in ids)
    first, last = (ids[0], ids[-1]) if ids else (None, None)
    return Page(items, first, first_index, last, count, len(ids) == count)


@pytest.mark.parametrize(
    ("rsm", "shown", "complete"),
    [
        (RsmRequest(max=2), page(0, ["a", "b"], 4), "false"),
        (RsmRequest(max=2, after="b"), page(2, ["c", "d"], 4), "true"),
        (RsmRequest(max=2, before=""), page(2, ["c", "d"], 4), "false"),
        (RsmRequest(max=2, before="c"), page(0, ["a", "b"], 4), "true"),
        (RsmRequest(max=2), page(None, [], 0), "true"),
    ],
)
def test_fin_says_complete_at_the_end_in_the_paging_direction(
    rsm: RsmRequest, shown: Page[ItemRecord], complete: str
) -> None:
    fin = fin_element(SearchQuery("blog", rsm=rsm), shown)
    assert fin.get("complete") == complete


def test_fin_golden() -> None:
    same(
        fin_element(SearchQuery("blog"), page(0, ["a", "b"], 2)),
        f"<fin xmlns='{MAM}' complete='true'><set xmlns='http://jabber.org/protocol/rsm'>"
        "<first index='0'>a</first><last>b</last><count>2</count></set></fin>",
    )


def test_disco_features_are_added_once() -> None:
    info = ET.fromstring("<query xmlns='http://jabber.org/protocol/disco#info'/>")
    add_search_features(info)
    add_search_features(info)
    same(
        info,
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        f"<feature var='{MAM}'/><feature var='urn:xmpp:fulltext:0'/></query>",
    )
