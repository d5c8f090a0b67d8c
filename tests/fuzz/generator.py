"""A seeded generator of hostile stanzas for Herald's two services (pure: no I/O).

Every case is well-formed XML a real client could send: the server must pass it on,
so a parse error would only test the server. What varies is everything Herald reads:
address headers (huge, malformed, bad JIDs, odd types), the `to` (escaped proxy
addresses, odd resources), pubsub requests with garbage numbers and unknown children,
deep nesting, every IQ type, and every message and presence type.

The same seed gives the same cases, in the same order: a failure replays with
HERALD_FUZZ_SEED=<seed>.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape

from tests.fuzz.pieces import (
    ADDRESS_NS,
    BAD_JIDS,
    DISCO_INFO_NS,
    DISCO_ITEMS_NS,
    EMOJI,
    GARBAGE_NUMBERS,
    ODD_RESOURCES,
    PUBSUB_NS,
    PUBSUB_OWNER_NS,
    RSM_NS,
    SANE_NUMBERS,
    STANZAS_NS,
    UNKNOWN_CHILDREN,
    attr,
    nested,
)

# Classes a known, separately fixed defect makes fail; the generator leaves them out
# unless HERALD_FUZZ_ALL=1. Delete an entry once its fix is merged.
KNOWN_DEFECTS: dict[str, str] = {}

Expect = Literal["answer", "silence", "maybe"]


@dataclass(frozen=True)
class World:
    """The JIDs of the test topology the cases address."""

    multicast: str
    pubsub: str
    upstream: str
    local_recipients: tuple[str, ...]  # connected accounts of the service's domain
    remote_recipients: tuple[str, ...]  # connected accounts of other domains
    pep_owner: str  # an account whose PEP the proxy may be asked about


@dataclass(frozen=True)
class Case:
    """One stanza to send, and what the sender may receive in return.

    expect: "answer": exactly one reply (IQ get/set); "silence": never a reply (IQ
    result/error, error messages); "maybe": an error reply, or deliveries, never both.
    """

    klass: str
    kind: Literal["iq", "message", "presence"]
    target: Literal["multicast", "pubsub"]
    stanza_id: str
    xml: str
    expect: Expect


class Generator:
    """Cases from one seed; `cases(n)` yields n of them across every class."""

    def __init__(self, seed: int, world: World, include_known: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.world = world
        self._serial = 0
        makers: dict[str, tuple[int, Callable[[], Case]]] = {
            "mc-valid": (8, self.mc_valid),
            "mc-huge-addresses": (3, self.mc_huge_addresses),
            "mc-bad-jid": (6, self.mc_bad_jid),
            "mc-odd-header": (8, self.mc_odd_header),
            "mc-odd-target": (4, self.mc_odd_target),
            "mc-deep": (2, self.mc_deep),
            "mc-error-headline": (5, self.mc_error_headline),
            "mc-presence": (5, self.mc_presence),
            "mc-iq": (10, self.mc_iq),
            "ps-items-garbage": (10, self.ps_items_garbage),
            "ps-unknown-children": (6, self.ps_unknown_children),
            "ps-other-requests": (6, self.ps_other_requests),
            "ps-iq-types": (8, self.ps_iq_types),
            "ps-odd-target": (5, self.ps_odd_target),
            "ps-deep": (2, self.ps_deep),
            "ps-message": (3, self.ps_message),
        }
        self.makers = {k: v for k, v in makers.items() if include_known or k not in KNOWN_DEFECTS}
        self._names = list(self.makers)
        self._weights = [self.makers[k][0] for k in self._names]

    def cases(self, count: int) -> Iterator[Case]:
        for _ in range(count):
            name = self.rng.choices(self._names, self._weights)[0]
            yield self.makers[name][1]()

    # -- helpers -----------------------------------------------------------------------

    def next_id(self, klass: str) -> str:
        self._serial += 1
        if self.rng.random() < 0.05:  # odd ids: quotes, emoji, long; still unique
            return f"f{self._serial}-{klass}-\"'<&\U0001f600" + "i" * self.rng.randrange(300)
        return f"f{self._serial}-{klass}"

    def pick(self, values: list[str] | tuple[str, ...]) -> str:
        return values[self.rng.randrange(len(values))]

    def recipient(self) -> str:
        w = self.world
        roll = self.rng.random()
        if roll < 0.5:
            jid = self.pick(w.local_recipients)
        elif roll < 0.75:
            jid = self.pick(w.remote_recipients)
        elif roll < 0.85:
            jid = "nobody@" + w.local_recipients[0].partition("@")[2]
        else:
            jid = self.pick(w.local_recipients) + "/" + self.pick(ODD_RESOURCES[:3])
        return jid

    def address(self, kind: str | None = None, jid: str | None = None, extra: str = "") -> str:
        kind = kind or self.pick(["to", "to", "cc", "bcc"])
        jid = jid if jid is not None else self.recipient()
        return f"<address type={attr(kind)} jid={attr(jid)}{extra}/>"

    def header(self, body: str) -> str:
        return f"<addresses xmlns='{ADDRESS_NS}'>{body}</addresses>"

    def message(
        self, klass: str, header: str, mtype: str = "", to: str = "", payload: str = ""
    ) -> Case:
        sid = self.next_id(klass)
        type_attr = f" type={attr(mtype)}" if mtype else ""
        body = payload or f"<body>{escape(sid)}</body>"
        xml = (
            f"<message id={attr(sid)} to={attr(to or self.world.multicast)}{type_attr}>"
            f"{body}{header}</message>"
        )
        expect: Expect = "silence" if mtype == "error" else "maybe"
        return Case(klass, "message", "multicast", sid, xml, expect)

    def iq(
        self, klass: str, target: Literal["multicast", "pubsub"], to: str, itype: str, payload: str
    ) -> Case:
        sid = self.next_id(klass)
        if itype == "error":
            payload += f"<error type='cancel'><item-not-found xmlns='{STANZAS_NS}'/></error>"
        xml = f"<iq type={attr(itype)} id={attr(sid)} to={attr(to)}>{payload}</iq>"
        expect: Expect = "answer" if itype in ("get", "set") else "silence"
        return Case(klass, "iq", target, sid, xml, expect)

    def iq_type(self) -> str:
        return self.pick(["get", "get", "set", "set", "result", "error"])

    # -- multicast -----------------------------------------------------------------------

    def mc_valid(self) -> Case:
        n = self.rng.randrange(1, 6)
        extras = ["", " delivered='true'", " desc='d'", " node='n'"]
        body = "".join(self.address(extra=self.pick(extras[:1] * 6 + extras)) for _ in range(n))
        if self.rng.random() < 0.3:
            body += self.pick(
                [
                    "<address type='noreply'/>",
                    "<address type='replyto' jid='alice@localhost'/>",
                    "<address type='ofrom' jid='alice@localhost'/>",
                ]
            )
        return self.message("mc-valid", self.header(body), self.pick(["", "chat", "normal"]))

    def mc_huge_addresses(self) -> Case:
        n = self.pick(["45", "51", "120", "199", "201", "400"])
        entries = []
        for _ in range(int(n)):
            entries.append(self.address(extra=f" desc={attr('d' * self.rng.randrange(40))}"))
        return self.message("mc-huge-addresses", self.header("".join(entries)))

    def mc_bad_jid(self) -> Case:
        good = [self.address() for _ in range(self.rng.randrange(0, 3))]
        bad = self.address(jid=self.pick(BAD_JIDS))
        good.insert(self.rng.randrange(len(good) + 1), bad)
        return self.message("mc-bad-jid", self.header("".join(good)))

    def mc_odd_header(self) -> Case:
        r = self.recipient
        variants = [
            self.header(""),
            "",  # no header at all
            self.header(f"<address type='to' jid={attr(r())} uri='xmpp:x@y'/>"),
            self.header("<address type='to'/>"),
            self.header(f"<address jid={attr(r())}/>"),
            self.header(f"<address type='foo' jid={attr(r())}/>"),
            self.header(f"<address type='TO' jid={attr(r())}/>"),
            self.header(f"<address type='to' uri={attr(self.pick(['mailto:a@b', 'x', '']))}/>"),
            self.header(self.address(extra=" delivered='true'") * 3),
            self.header(self.address(extra=" delivered='false'")),
            self.header(self.address(extra=" delivered='yes'")),
            self.header(self.address(jid=r()) * 2),  # duplicates
            self.header(self.address()) * 2,  # two headers
            self.header(self.header(self.address())),  # nested headers
            self.header(f"<address type='to' jid={attr(r())}><child/>text</address>"),
            self.header("text only"),
            self.header(f"<address type='to' jid={attr(r())} node={attr('n' * 3000)}/>"),
            self.header(f"<address type='to' jid={attr(r())} desc={attr(EMOJI * 500)}/>"),
            self.header(self.address(kind="noreply", jid=r()) + self.address(kind="replyroom")),
            self.header(self.address(kind="bcc") * 4),
            self.header(self.address(jid=self.world.multicast)),
            self.header(self.address(jid=f"x@{self.world.pubsub}")),
        ]
        header = self.pick(variants)
        payload = self.pick(["", "", self.pick(UNKNOWN_CHILDREN) + "<body>b</body>"])
        return self.message("mc-odd-header", header, payload=payload)

    def mc_odd_target(self) -> Case:
        w = self.world
        to = self.pick(
            [
                f"x@{w.multicast}",
                f"{w.multicast}/{self.pick(ODD_RESOURCES)}",
                f"{w.multicast}/res",
                f"\U0001f600@{w.multicast}",
            ]
        )
        return self.message("mc-odd-target", self.header(self.address()), to=to)

    def mc_deep(self) -> Case:
        depth = self.pick(["50", "200", "1200", "3000"])
        payload = f"<body>deep</body>{nested(int(depth))}"
        roll = self.rng.random()
        if roll < 0.2:  # an IQ nobody handles: slixmpp itself answers it
            inner = f"<query xmlns='{self.pick([DISCO_INFO_NS, 'urn:fuzz:none'])}'>"
            return self.iq(
                "mc-deep",
                "multicast",
                self.world.multicast,
                self.iq_type(),
                f"{inner}{nested(int(depth))}</query>",
            )
        if roll < 0.6:
            return self.message("mc-deep", self.header(self.address()), payload=payload)
        # nesting inside the header itself
        return self.message("mc-deep", self.header(self.address() + nested(int(depth))))

    def mc_error_headline(self) -> Case:
        mtype = self.pick(["error", "error", "headline", "groupchat", "bogus"])
        return self.message("mc-error-headline", self.header(self.address()), mtype)

    def mc_presence(self) -> Case:
        sid = self.next_id("mc-presence")
        ptype = self.pick(["", "", "unavailable", "error", "probe", "bogus"])
        header = self.pick([self.header(self.address()), "", self.header(self.pick(BAD_JIDS))])
        show = self.pick(["", "<show>away</show>", "<show>garbage</show>", nested(1500)])
        type_attr = f" type={attr(ptype)}" if ptype else ""
        xml = (
            f"<presence id={attr(sid)} to={attr(self.world.multicast)}{type_attr}>"
            f"{show}{header}</presence>"
        )
        expect: Expect = "silence" if ptype == "error" else "maybe"
        return Case("mc-presence", "presence", "multicast", sid, xml, expect)

    def mc_iq(self) -> Case:
        w = self.world
        payload = self.pick(
            [
                f"<query xmlns='{DISCO_INFO_NS}'/>",
                f"<query xmlns='{DISCO_ITEMS_NS}'/>",
                f"<query xmlns='{DISCO_INFO_NS}' node={attr(self.pick(GARBAGE_NUMBERS))}/>",
                f"<query xmlns='{DISCO_INFO_NS}'><feature var='x'/></query>",
                "<query xmlns='jabber:iq:version'/>",
                "<ping xmlns='urn:xmpp:ping'/>",
                "<vCard xmlns='vcard-temp'/>",
                f"<pubsub xmlns='{PUBSUB_NS}'><items node='x'/></pubsub>",
                self.pick(UNKNOWN_CHILDREN),
                "",
                f"<query xmlns='{DISCO_INFO_NS}'/><query xmlns='{DISCO_ITEMS_NS}'/>",
                self.header(self.address()),
            ]
        )
        to = self.pick(
            [
                w.multicast,
                w.multicast,
                f"{w.multicast}/{self.pick(ODD_RESOURCES)}",
                f"x@{w.multicast}",
            ]
        )
        return self.iq("mc-iq", "multicast", to, self.iq_type(), payload)

    # -- pubsub --------------------------------------------------------------------------

    def ps_to(self) -> str:
        w = self.world
        return self.pick(
            [
                w.pubsub,
                w.pubsub,
                f"{w.upstream}@{w.pubsub}",
                f"{w.pep_owner.replace('@', chr(92) + '40')}@{w.pubsub}",
            ]
        )

    def node(self) -> str:
        return self.pick(
            [
                "urn:xmpp:microblog:0",
                "fuzz-node",
                "",
                "n" * 2000,
                "\U0001f600",
                "a/b/../c",
                "urn:xmpp:microblog:0\u202e",
                " ",
            ]
        )

    def number(self) -> str:
        """Mostly garbage, sometimes a sane value, so some requests get to the pager."""
        return self.pick(GARBAGE_NUMBERS if self.rng.random() < 0.6 else SANE_NUMBERS)

    def ps_items_garbage(self) -> Case:
        node = "urn:xmpp:microblog:0" if self.rng.random() < 0.5 else self.node()
        attrs = f" node={attr(node)}"
        if self.rng.random() < 0.8:
            attrs += f" max_items={attr(self.number())}"
        if self.rng.random() < 0.2:
            attrs += f" subid={attr(self.pick(GARBAGE_NUMBERS))}"
        rsm = ""
        if self.rng.random() < 0.6:
            parts = [
                f"<max>{escape(self.number())}</max>",
                f"<index>{escape(self.number())}</index>",
                "<after>" + escape(self.pick(["item3", "item29", *GARBAGE_NUMBERS])) + "</after>",
                "<before/>",
                "<before>" + escape(self.pick(["item5", "nope", *GARBAGE_NUMBERS])) + "</before>",
            ]
            rsm = f"<set xmlns='{RSM_NS}'>" + "".join(self.rng.sample(parts, 2)) + "</set>"
        items = ""
        if self.rng.random() < 0.2:
            items = "".join(f"<item id={attr(self.pick(GARBAGE_NUMBERS))}/>" for _ in range(3))
        payload = f"<pubsub xmlns='{PUBSUB_NS}'><items{attrs}>{items}</items>{rsm}</pubsub>"
        return self.iq("ps-items-garbage", "pubsub", self.ps_to(), "get", payload)

    def ps_unknown_children(self) -> Case:
        inner = self.pick(
            [
                f"<items node='x'/>{self.pick(UNKNOWN_CHILDREN)}",
                self.pick(UNKNOWN_CHILDREN),
                "<items node='x'/><items node='y'/>",
                "",
                "<items node='x'><foo xmlns='urn:fuzz'/></items>",
                "<frobnicate node='x'/>",
            ]
        )
        payload = f"<pubsub xmlns='{self.pick([PUBSUB_NS, PUBSUB_OWNER_NS])}'>{inner}</pubsub>"
        if self.rng.random() < 0.3:
            payload += self.pick(UNKNOWN_CHILDREN)  # a second payload beside <pubsub/>
        return self.iq("ps-unknown-children", "pubsub", self.ps_to(), self.iq_type(), payload)

    def ps_other_requests(self) -> Case:
        node = attr(self.node())
        payload, itype = self.pick_pair(
            [
                (f"<pubsub xmlns='{PUBSUB_NS}'><subscriptions/></pubsub>", "get"),
                (f"<pubsub xmlns='{PUBSUB_NS}'><affiliations/></pubsub>", "get"),
                (f"<pubsub xmlns='{PUBSUB_NS}'><options node={node} jid='x'/></pubsub>", "get"),
                (
                    f"<pubsub xmlns='{PUBSUB_NS}'><publish node={node}><item id='1'>"
                    "<entry xmlns='urn:fuzz'/></item></publish></pubsub>",
                    "set",
                ),
                (
                    f"<pubsub xmlns='{PUBSUB_NS}'><retract node={node}><item id='x'/></retract>"
                    "</pubsub>",
                    "set",
                ),
                (
                    f"<pubsub xmlns='{PUBSUB_NS}'><subscribe node={node} "
                    f"jid={attr(self.pick(BAD_JIDS))}/></pubsub>",
                    "set",
                ),
                (
                    f"<pubsub xmlns='{PUBSUB_NS}'><unsubscribe node={node} jid='x@y'/></pubsub>",
                    "set",
                ),
                (f"<pubsub xmlns='{PUBSUB_OWNER_NS}'><configure node={node}/></pubsub>", "get"),
                (f"<pubsub xmlns='{PUBSUB_OWNER_NS}'><delete node={node}/></pubsub>", "set"),
                (f"<query xmlns='{DISCO_ITEMS_NS}' node={node}/>", "get"),
                (f"<query xmlns='{DISCO_INFO_NS}' node={node}/>", "get"),
                (f"<query xmlns='{DISCO_INFO_NS}'/>", "set"),
                (
                    f"<query xmlns='urn:xmpp:mam:2' node={node}><x xmlns='jabber:x:data' "
                    "type='submit'><field var='start'><value>garbage</value></field></x>"
                    f"<set xmlns='{RSM_NS}'><max>{escape(self.pick(GARBAGE_NUMBERS))}</max></set>"
                    "</query>",
                    "set",
                ),
                (
                    "<command xmlns='http://jabber.org/protocol/commands' node='stats' "
                    "action='execute'/>",
                    "set",
                ),
            ]
        )
        return self.iq("ps-other-requests", "pubsub", self.ps_to(), itype, payload)

    def pick_pair(self, values: list[tuple[str, str]]) -> tuple[str, str]:
        return values[self.rng.randrange(len(values))]

    def ps_iq_types(self) -> Case:
        payload = self.pick(
            [
                f"<pubsub xmlns='{PUBSUB_NS}'><items node='urn:xmpp:microblog:0'/></pubsub>",
                f"<query xmlns='{DISCO_INFO_NS}'/>",
                f"<query xmlns='{DISCO_ITEMS_NS}'/>",
                "<ping xmlns='urn:xmpp:ping'/>",
                "",
                self.pick(UNKNOWN_CHILDREN),
            ]
        )
        itype = self.pick(["get", "set", "result", "error", "result", "error"])
        return self.iq("ps-iq-types", "pubsub", self.ps_to(), itype, payload)

    def ps_odd_target(self) -> Case:
        w = self.world
        to = self.pick(
            [
                f"{w.pubsub}/{self.pick(ODD_RESOURCES)}",
                f"pubsub.nowhere.invalid@{w.pubsub}",
                f"\\zz@{w.pubsub}",
                f"{w.pubsub}\\40{w.pubsub}@{w.pubsub}",
                f"{w.pubsub}@{w.pubsub}",
                f"{w.multicast}@{w.pubsub}",
                f"127.0.0.1@{w.pubsub}",
                f"\U0001f600@{w.pubsub}",
            ]
        )
        payload = f"<pubsub xmlns='{PUBSUB_NS}'><items node={attr(self.node())}/></pubsub>"
        return self.iq("ps-odd-target", "pubsub", to, self.pick(["get", "get", "set"]), payload)

    def ps_deep(self) -> Case:
        depth = int(self.pick(["50", "200", "1200", "3000"]))
        payload, itype = self.pick_pair(
            [
                (
                    f"<pubsub xmlns='{PUBSUB_NS}'><items node='x'>{nested(depth)}</items></pubsub>",
                    "get",
                ),
                (
                    f"<pubsub xmlns='{PUBSUB_NS}'><publish node='fuzz-node'><item id='1'>"
                    f"{nested(depth)}</item></publish></pubsub>",
                    "set",
                ),
                (f"<query xmlns='{DISCO_INFO_NS}'>{nested(depth)}</query>", "get"),
                (f"<ping xmlns='urn:xmpp:ping'>{nested(depth)}</ping>", "get"),
                (f"<query xmlns='{DISCO_ITEMS_NS}'>{nested(depth)}</query>", "set"),
            ]
        )
        return self.iq("ps-deep", "pubsub", self.ps_to(), itype, payload)

    def ps_message(self) -> Case:
        sid = self.next_id("ps-message")
        mtype = self.pick(["", "error", "headline", "chat"])
        event = self.pick(
            [
                "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='x'>"
                "<item id='1'><entry xmlns='urn:fuzz'/></item></items></event>",
                "<body>hello proxy</body>",
                self.header(self.address()),
                "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='x'>"
                f"<item id='1'>{nested(2000)}</item></items></event>",
            ]
        )
        type_attr = f" type={attr(mtype)}" if mtype else ""
        xml = f"<message id={attr(sid)} to={attr(self.ps_to())}{type_attr}>{event}</message>"
        expect: Expect = "silence" if mtype == "error" else "maybe"
        return Case("ps-message", "message", "pubsub", sid, xml, expect)
