"""The built-in ``atom`` parser for XEP-0277 microblog items."""

from __future__ import annotations

import json
from typing import Any
from xml.etree.ElementTree import Comment, Element, fromstring

import pytest

from component.pubsub.parsers.atom import parse_atom

A = "xmlns='http://www.w3.org/2005/Atom'"

FULL_ENTRY = f"""
<entry {A}>
  <author>
    <name> Romeo Montague </name>
    <uri>xmpp:romeo@montague.lit</uri>
    <email>romeo@montague.lit</email>
  </author>
  <title type='text'>hanging out at the Caf&#233; Napolitano</title>
  <link rel='alternate' type='text/html'
        href='http://montague.lit/romeo/posts/1' title='web'/>
  <link href='http://montague.lit/no-rel'/>
  <link rel='replies' title='comments'/>
  <category term='coffee' label='Coffee'/>
  <category label='no term'/>
  <category term='verona'/>
  <id>tag:montague.lit,2008-05-08:posts-1cb57d9c1c725a5f</id>
  <published>2008-05-08T18:30:02Z</published>
  <updated>2008-05-09T10:11:12+02:00</updated>
  <summary>  short  </summary>
  <content type='xhtml'>
    <div xmlns='http://www.w3.org/1999/xhtml'><p>Hello <b>Juliet</b></p></div>
  </content>
  <content>Hello Juliet, plain</content>
</entry>
"""


def test_full_entry() -> None:
    parsed = parse_atom(fromstring(FULL_ENTRY))
    assert parsed == {
        "id": "tag:montague.lit,2008-05-08:posts-1cb57d9c1c725a5f",
        "title": "hanging out at the Café Napolitano",
        "summary": "short",
        "content": "Hello Juliet, plain",
        "content_type": "text",
        "published": "2008-05-08T18:30:02Z",
        "updated": "2008-05-09T10:11:12+02:00",
        "author": {
            "name": "Romeo Montague",
            "uri": "xmpp:romeo@montague.lit",
            "email": "romeo@montague.lit",
        },
        "categories": ["coffee", "verona"],
        "links": [
            {
                "rel": "alternate",
                "href": "http://montague.lit/romeo/posts/1",
                "type": "text/html",
                "title": "web",
            },
            {"rel": "alternate", "href": "http://montague.lit/no-rel"},
        ],
    }
    assert json.loads(json.dumps(parsed)) == parsed


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "<content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'>"
            "<p>Hi <em>there</em>,</p> <p>friend</p></div></content>",
            ("Hi there, friend", "xhtml"),
        ),
        ("<content type='html'>&lt;p&gt;Hi&lt;/p&gt;</content>", ("<p>Hi</p>", "html")),
        ("<content>  plain text \n</content>", ("plain text", "text")),
        (
            "<content type='xhtml'>no div, <x xmlns='urn:x'>odd</x></content>",
            ("no div, odd", "xhtml"),
        ),
        ("<content type='text/plain' src='http://x/y'/>", None),
        ("<content/>", None),
    ],
)
def test_content_variants(content: str, expected: tuple[str, str] | None) -> None:
    parsed = parse_atom(fromstring(f"<entry {A}>{content}</entry>"))
    found = (parsed["content"], parsed["content_type"]) if "content" in parsed else None
    assert found == expected


def test_xhtml_title() -> None:
    entry = fromstring(
        f"<entry {A}><title type='xhtml'>"
        "<div xmlns='http://www.w3.org/1999/xhtml'>A <b>bold</b> title</div></title></entry>"
    )
    assert parse_atom(entry)["title"] == "A bold title"


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        (f"<entry {A}/>", {"categories": [], "links": []}),
        (
            f"<entry {A}><author><uri>xmpp:a@b</uri></author><title/></entry>",
            {"author": {"uri": "xmpp:a@b"}, "categories": [], "links": []},
        ),
        (
            f"<entry {A}><author><name>  </name></author><published/></entry>",
            {"categories": [], "links": []},
        ),
        # Elements from another namespace are not Atom, even with Atom names.
        (f"<entry {A}><title xmlns='urn:x'>no</title></entry>", {"categories": [], "links": []}),
        ("<entry><title>not atom</title></entry>", {}),
        ("<tune xmlns='http://jabber.org/protocol/tune'><title>x</title></tune>", {}),
        (f"<feed {A}><title>a feed, not an entry</title></feed>", {}),
    ],
)
def test_missing_and_foreign_elements(xml: str, expected: dict[str, Any]) -> None:
    assert parse_atom(fromstring(xml)) == expected


def test_comments_and_odd_input_do_not_raise() -> None:
    entry = fromstring(f"<entry {A}><title>Hi</title></entry>")
    comment = Comment("not text")
    comment.tail = " you"
    entry[0].append(comment)
    entry.append(Comment("stray"))
    assert parse_atom(entry)["title"] == "Hi you"
    assert parse_atom(None) == {}  # type: ignore[arg-type]
    assert parse_atom(Element("entry")) == {}
