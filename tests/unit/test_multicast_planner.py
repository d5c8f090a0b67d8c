"""Tests for the pure XEP-0033 §6 delivery planner."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Literal

import pytest
from pydantic import ValidationError

from component.multicast.addresses import AddressError, AddressList, AddressType, parse_addresses
from component.multicast.planner import (
    Copy,
    DeliveryPlan,
    PlanError,
    PlanRequest,
    RemoteSupport,
    plan,
    remote_domains,
)

NS = "http://jabber.org/protocol/address"
H2 = {"header2.org": RemoteSupport(service_jid="multicast.header2.org")}


def hdr(*entries: str) -> AddressList:
    """Parse `type=jid[!]` shorthands ('!' = delivered) or raw <address/> XML."""
    body = "".join(e if e.startswith("<") else _short(e) for e in entries)
    return parse_addresses(ET.fromstring(f"<addresses xmlns='{NS}'>{body}</addresses>"))


def _short(entry: str) -> str:
    kind, jid = entry.split("=", 1)
    delivered = " delivered='true'" if jid.endswith("!") else ""
    return f"<address type='{kind}' jid='{jid.rstrip('!')}'{delivered}/>"


def request(
    addresses: AddressList,
    *,
    sender: str = "a@header1.org/work",
    local: frozenset[str] = frozenset({"header1.org"}),
    remote: Mapping[str, RemoteSupport] | None = None,
    max_recipients: int = 50,
    kind: Literal["message", "presence"] = "message",
) -> PlanRequest:
    return PlanRequest(
        sender=sender,
        kind=kind,
        addresses=addresses,
        local_domains=local,
        remote_support=remote or {},
        max_recipients=max_recipients,
    )


def summary(result: DeliveryPlan) -> list[tuple[str, str, AddressList]]:
    assert result.error is None, result.error
    return [(c.to, c.route, c.addresses) for c in result.copies]


# --- XEP-0033 §8 example flow, reproduced address by address -------------------------

XEP_INPUT = hdr(
    "to=to@header1.org", "cc=cc@header1.org", "bcc=bcc@header1.org",
    "to=to@header2.org", "cc=cc@header2.org", "bcc=bcc@header2.org",
    "to=to@noheader.org", "cc=cc@noheader.org", "bcc=bcc@noheader.org",
)  # fmt: skip
ALL_DELIVERED = (
    "to=to@header1.org!", "cc=cc@header1.org!", "to=to@header2.org!",
    "cc=cc@header2.org!", "to=to@noheader.org!", "cc=cc@noheader.org!",
)  # fmt: skip
XEP_SERVICE_COPY = hdr(
    "to=to@header1.org!", "cc=cc@header1.org!",
    "to=to@header2.org", "cc=cc@header2.org", "bcc=bcc@header2.org",
    "to=to@noheader.org!", "cc=cc@noheader.org!",
)  # fmt: skip
XEP_HEADER1_EXPECTED = [
    ("to@header1.org", "local", hdr(*ALL_DELIVERED)),
    ("cc@header1.org", "local", hdr(*ALL_DELIVERED)),
    (
        "bcc@header1.org",
        "local",
        hdr(*ALL_DELIVERED[:2], "bcc=bcc@header1.org", *ALL_DELIVERED[2:]),
    ),
    ("multicast.header2.org", "remote_service", XEP_SERVICE_COPY),
    ("to@noheader.org", "remote_direct", hdr(*ALL_DELIVERED)),
    ("cc@noheader.org", "remote_direct", hdr(*ALL_DELIVERED)),
    ("bcc@noheader.org", "remote_direct", hdr(*ALL_DELIVERED, "bcc=bcc@noheader.org")),
]
XEP_HEADER2_EXPECTED = [
    ("to@header2.org", "local", hdr(*ALL_DELIVERED)),
    ("cc@header2.org", "local", hdr(*ALL_DELIVERED)),
    (
        "bcc@header2.org",
        "local",
        hdr(*ALL_DELIVERED[:4], "bcc=bcc@header2.org", *ALL_DELIVERED[4:]),
    ),
]
# §4 examples 1 and 2: the second is a remote sender whose recipients are all local.
XEP4_EX1 = hdr(
    "<address type='to' jid='hildjj@jabber.org/Work' desc='Joe Hildebrand'/>",
    "<address type='cc' jid='jer@jabber.org/Home' desc='Jeremie Miller'/>",
)
XEP4_EX1_DELIVERED = hdr(
    "<address type='to' jid='hildjj@jabber.org/Work' desc='Joe Hildebrand' delivered='true'/>",
    "<address type='cc' jid='jer@jabber.org/Home' desc='Jeremie Miller' delivered='true'/>",
)

XEP_FLOWS = [
    pytest.param(
        request(XEP_INPUT, remote={**H2, "noheader.org": RemoteSupport()}),
        XEP_HEADER1_EXPECTED,
        id="s8-header1-service",
    ),
    pytest.param(
        request(XEP_INPUT, remote=H2),
        XEP_HEADER1_EXPECTED,
        id="s8-undiscovered-domain-is-served-directly",
    ),
    pytest.param(
        request(XEP_INPUT, remote=H2, kind="presence"),
        XEP_HEADER1_EXPECTED,
        id="s8-same-plan-for-presence-with-bcc",
    ),
    pytest.param(
        request(
            XEP_INPUT,
            local=frozenset({"Header1.ORG"}),
            remote={"HEADER2.org": H2["header2.org"], "NoHeader.org": RemoteSupport()},
        ),
        XEP_HEADER1_EXPECTED,
        id="s8-domains-compared-case-insensitively",
    ),
    pytest.param(
        request(XEP_SERVICE_COPY, local=frozenset({"header2.org"})),
        XEP_HEADER2_EXPECTED,
        id="s8-header2-service-delivers-its-share-for-a-remote-sender",
    ),
    pytest.param(
        request(XEP4_EX1, sender="romeo@jabber.org/orchard", local=frozenset({"jabber.org"})),
        [
            ("hildjj@jabber.org/Work", "local", XEP4_EX1_DELIVERED),
            ("jer@jabber.org/Home", "local", XEP4_EX1_DELIVERED),
        ],
        id="s4-example-1",
    ),
    pytest.param(
        request(
            hdr("bcc=temas@jabber.org", "bcc=jer@jabber.org"),
            sender="hildjj@jabber.com",
            local=frozenset({"jabber.org"}),
            kind="presence",
        ),
        [
            ("temas@jabber.org", "local", hdr("bcc=temas@jabber.org")),
            ("jer@jabber.org", "local", hdr("bcc=jer@jabber.org")),
        ],
        id="s4-example-2-remote-sender-all-local-bcc-presence",
    ),
]


@pytest.mark.parametrize(("req", "expected"), XEP_FLOWS)
def test_xep_example_flows(req: PlanRequest, expected: list[tuple[str, str, AddressList]]) -> None:
    assert summary(plan(req)) == expected


def test_service_copy_lists_the_recipients_it_hands_off() -> None:
    copies = plan(request(XEP_INPUT, remote=H2)).copies
    by_route = {c.to: c.recipients for c in copies}
    assert by_route["multicast.header2.org"] == (
        "to@header2.org",
        "cc@header2.org",
        "bcc@header2.org",
    )
    assert by_route["to@header1.org"] == ("to@header1.org",)


def test_remote_domains_for_the_xep_flow() -> None:
    assert remote_domains(request(XEP_INPUT)) == {"header2.org", "noheader.org"}
    assert remote_domains(request(XEP_SERVICE_COPY, local=frozenset({"header2.org"}))) == set()


def test_remote_domains_skip_delivered_and_local_and_fold_case() -> None:
    req = request(
        hdr("to=x@Remote.ORG", "to=y@gone.org!", "cc=z@header1.org", "replyto=r@else.org")
    )
    assert remote_domains(req) == {"remote.org"}


# --- error paths: the plan is an error and nothing is sent -------------------------------

REMOTE_SENDER = "eve@elsewhere.net/x"
ERRORS = [
    pytest.param(hdr(), {}, "bad-request", "empty", id="empty"),
    pytest.param(
        hdr("replyto=r@header1.org", "<address type='noreply' desc='x'/>"),
        {}, "bad-request", "no to, cc or bcc", id="no-recipient-type",
    ),
    pytest.param(
        hdr("to=a@header1.org!", "bcc=b@header2.org!"),
        {}, "bad-request", "already marked delivered", id="all-delivered",
    ),
    pytest.param(
        hdr("to=a@header2.org"),
        {"sender": REMOTE_SENDER}, "forbidden", "Relaying denied", id="relay-remote-only",
    ),
    pytest.param(
        hdr("to=a@header1.org", "bcc=b@header2.org"),
        {"sender": REMOTE_SENDER}, "forbidden", "header2.org", id="relay-mixed-delivers-none",
    ),
    pytest.param(
        hdr("to=a@header1.org", "cc=b@header1.org", "bcc=c@header1.org"),
        {"max_recipients": 2}, "not-acceptable", "limit is 2", id="too-many-counts-bcc",
    ),
    pytest.param(
        hdr("<address type='to' uri='sip:a@header1.org'/>", "to=b@header1.org"),
        {}, "jid-malformed", "sip:a@header1.org", id="uri-recipient",
    ),
    pytest.param(
        hdr("<address type='to' desc='Foo Group'><g xmlns='urn:g'>foo</g></address>"),
        {}, "jid-malformed", "Foo Group", id="s4-extension-example-has-no-jid",
    ),
    pytest.param(
        hdr("<address type='cc' node='n1'/>"), {}, "jid-malformed", "no jid", id="node-only",
    ),
    pytest.param(
        hdr("to=a@header2.org", "to=b@header2.org", "to=c@header2.org"),
        {"sender": REMOTE_SENDER, "max_recipients": 1}, "forbidden", "Relaying",
        id="relay-checked-before-limit",
    ),
    pytest.param(
        hdr("<address type='to' uri='sip:a@x.org'/>", "to=b@x.org", "to=c@x.org"),
        {"max_recipients": 2}, "not-acceptable", "Too many", id="limit-checked-before-uri",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("addresses", "options", "condition", "text"), ERRORS)
def test_rejections(
    addresses: AddressList, options: dict[str, object], condition: str, text: str
) -> None:
    req = request(addresses, remote=H2, **options)  # type: ignore[arg-type]
    result = plan(req)
    assert result.copies == ()
    assert result.error is not None
    assert result.error.condition == condition
    assert text in result.error.text
    assert remote_domains(req) == frozenset()


def test_limit_counts_only_undelivered() -> None:
    req = request(
        hdr("to=a@header1.org", "cc=b@header1.org!", "bcc=c@header1.org"), max_recipients=2
    )
    assert [c.to for c in plan(req).copies] == ["a@header1.org", "c@header1.org"]


def test_uri_already_delivered_is_kept_not_rejected() -> None:
    uri = "<address type='cc' uri='sip:x@y.org' delivered='true'/>"
    result = plan(request(hdr("to=a@header1.org", uri)))
    assert summary(result) == [("a@header1.org", "local", hdr("to=a@header1.org!", uri))]


def test_remote_sender_may_hand_over_its_local_share_with_others_delivered() -> None:
    req = request(
        hdr("to=x@elsewhere.net!", "to=a@header1.org", "bcc=b@header2.org!"),
        sender=REMOTE_SENDER,
    )
    assert summary(plan(req)) == [
        ("a@header1.org", "local", hdr("to=x@elsewhere.net!", "to=a@header1.org!")),
    ]


# --- delivered handling ------------------------------------------------------------------


def test_delivered_addresses_are_never_redelivered_nor_reopened() -> None:
    req = request(
        hdr("to=a@header1.org!", "cc=b@header1.org", "to=c@header2.org!", "cc=d@header2.org"),
        remote=H2,
    )
    everything = hdr(
        "to=a@header1.org!", "cc=b@header1.org!", "to=c@header2.org!", "cc=d@header2.org!"
    )
    assert summary(plan(req)) == [
        ("b@header1.org", "local", everything),
        (
            "multicast.header2.org",
            "remote_service",
            hdr("to=a@header1.org!", "cc=b@header1.org!", "to=c@header2.org!", "cc=d@header2.org"),
        ),
    ]


def test_a_jid_already_delivered_under_another_entry_is_not_delivered_again() -> None:
    req = request(hdr("to=a@header2.org!", "cc=a@header2.org", "to=b@header2.org"), remote=H2)
    assert summary(plan(req)) == [
        (
            "multicast.header2.org",
            "remote_service",
            hdr("to=a@header2.org!", "cc=a@header2.org!", "to=b@header2.org"),
        ),
    ]


# --- splitting by the remote's max_per_stanza ----------------------------------------------

SPLIT_INPUT = hdr(
    "to=t1@r.org", "cc=t2@r.org", "bcc=t3@r.org", "to=t4@r.org", "to=t5@r.org",
    "to=l@header1.org", "replyto=rt@header1.org",
)  # fmt: skip
SPLIT_REMOTE = {"r.org": RemoteSupport(service_jid="mc.r.org", max_per_stanza=2)}


def test_split_by_max_per_stanza() -> None:
    copies = summary(plan(request(SPLIT_INPUT, remote=SPLIT_REMOTE)))
    rest = ("to=l@header1.org!", "replyto=rt@header1.org")
    t1, t2, t3, t4, t5 = "to=t1@r.org", "cc=t2@r.org", "bcc=t3@r.org", "to=t4@r.org", "to=t5@r.org"
    done = {t: f"{t}!" for t in (t1, t2, t4, t5)}
    assert copies == [
        ("mc.r.org", "remote_service", hdr(t1, t2, done[t4], done[t5], *rest)),
        ("mc.r.org", "remote_service", hdr(done[t1], done[t2], t3, t4, done[t5], *rest)),
        ("mc.r.org", "remote_service", hdr(done[t1], done[t2], done[t4], t5, *rest)),
        ("l@header1.org", "local", hdr(done[t1], done[t2], done[t4], done[t5], *rest)),
    ]  # fmt: skip


@pytest.mark.parametrize(("limit", "expected_copies"), [(1, 5), (2, 3), (3, 2), (5, 1), (None, 1)])
def test_split_hands_each_recipient_to_exactly_one_chunk(
    limit: int | None, expected_copies: int
) -> None:
    remote = {"r.org": RemoteSupport(service_jid="mc.r.org", max_per_stanza=limit)}
    service = [c for c in plan(request(SPLIT_INPUT, remote=remote)).copies if c.to == "mc.r.org"]
    assert len(service) == expected_copies
    handed: list[str | None] = []
    for copy in service:
        open_entries = [a.normalized_jid for a in copy.addresses.undelivered()]
        assert len(open_entries) <= (limit or 5)
        assert open_entries == list(copy.recipients)
        handed += open_entries
    assert handed == ["t1@r.org", "t2@r.org", "t3@r.org", "t4@r.org", "t5@r.org"]


# --- deduplication -------------------------------------------------------------------------

DEDUP = [
    pytest.param(
        hdr("to=a@header1.org", "cc=a@header1.org"),
        [("a@header1.org", "local", hdr("to=a@header1.org!", "cc=a@header1.org!"))],
        id="to-and-cc",
    ),
    pytest.param(
        hdr("to=Bob@Header1.org", "cc=bob@header1.ORG"),
        [("bob@header1.org", "local", hdr("to=Bob@Header1.org!", "cc=bob@header1.ORG!"))],
        id="case-insensitive-keeps-original-text",
    ),
    pytest.param(
        hdr("to=a@header1.org/phone", "to=a@header1.org"),
        [
            ("a@header1.org/phone", "local", hdr("to=a@header1.org/phone!", "to=a@header1.org!")),
            ("a@header1.org", "local", hdr("to=a@header1.org/phone!", "to=a@header1.org!")),
        ],
        id="full-and-bare-jid-are-distinct",
    ),
    pytest.param(
        hdr("to=a@header1.org", "bcc=a@header1.org", "to=c@header1.org"),
        [
            (
                "a@header1.org",
                "local",
                hdr("to=a@header1.org!", "bcc=a@header1.org", "to=c@header1.org!"),
            ),
            ("c@header1.org", "local", hdr("to=a@header1.org!", "to=c@header1.org!")),
        ],
        id="to-and-bcc-local",
    ),
    pytest.param(
        hdr("to=a@header2.org", "cc=a@header2.org"),
        [("multicast.header2.org", "remote_service", hdr("to=a@header2.org", "cc=a@header2.org!"))],
        id="service-gets-one-open-entry",
    ),
    pytest.param(
        hdr("bcc=a@header2.org", "to=a@header2.org"),
        [("multicast.header2.org", "remote_service", hdr("to=a@header2.org"))],
        id="service-prefers-visible-entry-over-bcc",
    ),
    pytest.param(
        hdr("to=a@noheader.org", "cc=a@noheader.org"),
        [("a@noheader.org", "remote_direct", hdr("to=a@noheader.org!", "cc=a@noheader.org!"))],
        id="direct",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("addresses", "expected"), DEDUP)
def test_deduplication(
    addresses: AddressList, expected: list[tuple[str, str, AddressList]]
) -> None:
    assert summary(plan(request(addresses, remote=H2))) == expected


# --- bcc visibility and header invariants over several scenarios --------------------------

SCENARIOS = [
    pytest.param(request(XEP_INPUT, remote=H2), id="xep"),
    pytest.param(request(SPLIT_INPUT, remote=SPLIT_REMOTE), id="split"),
    pytest.param(
        request(
            hdr(
                "bcc=a@header1.org", "bcc=b@header2.org", "to=a@header1.org", "bcc=c@header2.org",
                "bcc=d@noheader.org", "replyroom=room@conf.header1.org", "ofrom=o@header1.org/r",
                "<address type='noreply' desc='please do not'/>", "replyto=r@header2.org",
            ),
            remote={"header2.org": RemoteSupport(service_jid="mc.header2.org", max_per_stanza=1)},
        ),
        id="mixed",
    ),
]  # fmt: skip


def _service_of(req: PlanRequest, jid: str) -> str | None:
    support = req.remote_support.get(jid.split("@")[-1].split("/")[0])
    return None if support is None else support.service_jid


@pytest.mark.parametrize("req", SCENARIOS)
def test_bcc_entries_only_reach_their_recipient_or_its_service(req: PlanRequest) -> None:
    copies = plan(req).copies
    assert copies
    for bcc in req.addresses.of_type(AddressType.BCC):
        jid = bcc.normalized_jid
        assert jid is not None
        holders = [c for c in copies if bcc in c.addresses.addresses]
        assert holders, f"{jid} got no copy carrying its bcc entry"
        for copy in holders:
            own = copy.route != "remote_service" and copy.to == jid
            service = copy.route == "remote_service" and copy.to == _service_of(req, jid)
            assert own or (service and jid in copy.recipients), (jid, copy.to)


NON_RECIPIENT = (AddressType.REPLYTO, AddressType.REPLYROOM, AddressType.NOREPLY, AddressType.OFROM)


@pytest.mark.parametrize("req", SCENARIOS)
def test_every_copy_keeps_non_recipient_addresses_and_order(req: PlanRequest) -> None:
    original = [(a.type, a.jid) for a in req.addresses.addresses]
    for copy in plan(req).copies:
        assert copy.addresses.of_type(*NON_RECIPIENT) == req.addresses.of_type(*NON_RECIPIENT)
        visible = [(a.type, a.jid) for a in copy.addresses.addresses]
        assert visible == [entry for entry in original if entry in visible]


@pytest.mark.parametrize("req", SCENARIOS)
def test_each_recipient_is_delivered_exactly_once(req: PlanRequest) -> None:
    delivered = [jid for c in plan(req).copies for jid in c.recipients]
    expected = {a.normalized_jid for a in req.addresses.undelivered()}
    assert sorted(delivered) == sorted(j for j in expected if j is not None)
    for copy in plan(req).copies:
        if copy.route != "remote_service":
            assert copy.addresses.undelivered() == copy.addresses.of_type(AddressType.BCC)


# --- model validation ----------------------------------------------------------------------


def test_invalid_sender_is_jid_malformed() -> None:
    with pytest.raises(AddressError) as info:
        request(hdr("to=a@header1.org"), sender="a@@header1.org")
    assert info.value.condition == "jid-malformed"


@pytest.mark.parametrize(
    "build",
    [
        lambda: request(hdr("to=a@header1.org"), max_recipients=0),
        lambda: RemoteSupport(service_jid="mc.r.org", max_per_stanza=0),
        lambda: DeliveryPlan(
            error=PlanError(condition="forbidden", text="no"),
            copies=(Copy(to="a@b", route="local", addresses=hdr("to=a@b"), recipients=("a@b",)),),
        ),
    ],
)
def test_invalid_models_are_refused(build: object) -> None:
    with pytest.raises(ValidationError):
        build()  # type: ignore[operator]


# --- Herald's own services are never recipients (issue 11: a loop through itself) --------

OWN = frozenset({"multicast.header1.org", "pubsub.header1.org"})


@pytest.mark.parametrize(
    "target",
    ["multicast.header1.org", "x@multicast.header1.org", "X@PubSub.Header1.org/r"],
)
def test_own_services_are_refused_before_any_discovery(target: str) -> None:
    req = request(hdr("to=b@header1.org", f"cc={target}")).model_copy(update={"own_domains": OWN})
    req = PlanRequest.model_validate(req.model_dump())
    assert remote_domains(req) == frozenset()
    result = plan(req)
    assert result.copies == ()
    assert result.error is not None
    assert result.error.condition == "forbidden"
    assert target in result.error.text


def test_own_service_already_delivered_is_not_a_recipient() -> None:
    req = PlanRequest.model_validate(
        {**request(hdr("to=b@header1.org", "to=x@multicast.header1.org!")).model_dump(),
         "own_domains": OWN}
    )  # fmt: skip
    assert [c.to for c in plan(req).copies] == ["b@header1.org"]


def test_a_bare_noreply_rides_along_on_every_copy() -> None:
    header = hdr("to=b@header1.org", "<address type='noreply'/>")
    assert summary(plan(request(header))) == [
        ("b@header1.org", "local", hdr("to=b@header1.org!", "<address type='noreply'/>"))
    ]
