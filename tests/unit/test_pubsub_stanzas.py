"""Golden-XML stream tests of the pubsub proxy's handlers, in the style of slixmpp's
SlixTest (tests/unit/stream.py runs the component on slixmpp's test transport).

Upstream is played by the test: what Herald sends upstream is checked, and the
test feeds back the answer a server would give.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from component.config import PubsubSettings
from component.pubsub.rules import Registry
from component.pubsub.service import PubsubComponent
from tests.unit.stream import StreamTest

PS = "http://jabber.org/protocol/pubsub"
DISCO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
PRIV = "urn:xmpp:privilege:2"
FWD = "urn:xmpp:forward:0"
FORM = "jabber:x:data"
ORIGIN = "pubsub-origin.example.org"
ADVERT = f"""<message from="example.org" to="pubsub.example.org">
  <privilege xmlns="{PRIV}"><perm access="iq">
    <namespace ns="{PS}" type="both"/></perm></privilege></message>"""


def meta(access: str) -> str:
    """A node's disco#info answer, as upstream gives it, naming its access model."""
    return f"""<query xmlns="{DISCO}" node="feed"><identity category="pubsub" type="leaf"/>
      <x xmlns="{FORM}" type="result">
        <field var="FORM_TYPE" type="hidden"><value>{PS}#meta-data</value></field>
        <field var="pubsub#access_model"><value>{access}</value></field></x></query>"""


REFUSAL = f"""<error type="auth"><forbidden xmlns="{ERR}"/><text xmlns="{ERR}" xml:lang="en">
Herald cannot make this request on your behalf: the server grants it no XEP-0356
permission for it, and Herald never makes it as itself.</text></error>""".replace("\n", " ")
ITEMS = f"""<pubsub xmlns="{PS}"><items node="feed">
  <item id="a"><entry xmlns="http://www.w3.org/2005/Atom"><title>A</title></entry></item>
  </items></pubsub>"""


class PubsubStanzaTest(StreamTest):
    """Feeds stanzas to a PubsubComponent and checks the XML it sends."""

    def start(self) -> None:
        settings = PubsubSettings(
            jid="pubsub.example.org",
            secret="s",  # type: ignore[arg-type]
            upstream=ORIGIN,
            upstream_timeout=0.5,
            rules=[{"node": "blog*", "sync": True, "parser": "atom"}],  # type: ignore[list-item]
        )
        loop = self.boot(
            lambda sessions: PubsubComponent(
                settings,
                "localhost",
                5347,
                sessions,
                Registry.from_config(settings.rules),
                trusted_hosts=frozenset({"example.org"}),
            )
        )
        assert isinstance(self.xmpp, PubsubComponent)
        self.proxy = self.xmpp
        loop.run_until_complete(self.proxy.prepare())

    def ask(self, payload: str, iq_type: str = "get", iq_id: str = "q1") -> None:
        self.deliver(
            f'<iq type="{iq_type}" id="{iq_id}" from="alice@example.org/desk" '
            f'to="pubsub.example.org">{payload}</iq>'
        )

    def answer(self, sent: object, payload: str, frm: str = ORIGIN) -> None:
        """Upstream's result to a request Herald sent (sent: what expect() returned)."""
        iq_id = sent.get("id")  # type: ignore[attr-defined]
        self.deliver(
            f'<iq type="result" id="{iq_id}" from="{frm}" to="pubsub.example.org">{payload}</iq>'
        )

    def expect_upstream(self, payload: str) -> ET.Element:
        """The next stanza asks upstream for payload, as Herald itself."""
        sent = self.expect(
            f'<iq type="get" id="*" from="pubsub.example.org" to="{ORIGIN}">{payload}</iq>'
        )
        assert sent is not None
        return sent

    def expect_check(self, node: str) -> ET.Element:
        """The next stanza reads the node's metadata upstream, as Herald."""
        return self.expect_upstream(f'<query xmlns="{DISCO}" node="{node}"/>')

    def expect_result(self, iq_id: str, payload: str) -> None:
        """The next stanza answers request iq_id with payload."""
        self.expect(
            f"""<iq type="result" id="{iq_id}" from="pubsub.example.org"
                 to="alice@example.org/desk">{payload}</iq>"""
        )

    def relayed(self, payload: str, answer: str, iq_id: str) -> None:
        """Herald reads payload upstream as itself, and relays the answer to iq_id."""
        self.answer(self.expect_upstream(payload), answer)
        self.expect_result(iq_id, answer)

    def upstream_error(self, sent: ET.Element, condition: str) -> None:
        """Upstream's error answer to what Herald sent."""
        self.deliver(
            f"""<iq type="error" id="{sent.get("id")}" from="{ORIGIN}" to="pubsub.example.org">
              <error type="cancel"><{condition} xmlns="{ERR}"/></error></iq>"""
        )

    def expect_refused(self, iq_id: str) -> None:
        """The next stanza refuses request iq_id: no IQ permission, never as Herald."""
        self.expect(
            f"""<iq type="error" id="{iq_id}" from="pubsub.example.org"
                 to="alice@example.org/desk">{REFUSAL}</iq>"""
        )

    def test_items_without_a_node_get_bad_request_and_nodeid_required(self) -> None:
        self.start()
        self.ask(f'<pubsub xmlns="{PS}"><items/></pubsub>')
        self.expect(
            f"""<iq type="error" id="q1" from="pubsub.example.org" to="alice@example.org/desk">
              <error type="modify"><bad-request xmlns="{ERR}"/>
                <text xmlns="{ERR}" xml:lang="en">Items retrieval needs a node.</text>
                <nodeid-required xmlns="{PS}#errors"/></error></iq>"""
        )
        self.expect(None)

    def test_a_write_without_iq_permission_is_refused_not_made_as_herald(self) -> None:
        self.start()
        self.ask(
            f'<pubsub xmlns="{PS}"><publish node="feed"><item id="x"/></publish></pubsub>',
            "set",
        )
        self.expect_refused("q1")
        self.expect(None)

    def test_a_write_goes_as_the_user_in_a_privileged_iq(self) -> None:
        self.start()
        self.deliver(ADVERT)
        self.ask(
            f'<pubsub xmlns="{PS}"><retract node="feed"><item id="x"/></retract></pubsub>', "set"
        )
        sent = self.expect(
            f"""<iq type="set" id="*" from="pubsub.example.org" to="alice@example.org">
              <privileged_iq xmlns="{PRIV}">
                <iq xmlns="jabber:client" type="set" id="*" from="alice@example.org"
                    to="{ORIGIN}"><pubsub xmlns="{PS}"><retract node="feed">
                    <item id="x"/></retract></pubsub></iq></privileged_iq></iq>"""
        )
        assert sent is not None
        inner = sent.find(f"{{{PRIV}}}privileged_iq/{{jabber:client}}iq")
        assert inner is not None
        self.answer(
            sent,
            f"""<privilege xmlns="{PRIV}"><forwarded xmlns="{FWD}">
                <iq xmlns="jabber:client" type="result" id="{inner.get("id")}"
                    from="{ORIGIN}" to="alice@example.org"/></forwarded></privilege>""",
            frm="alice@example.org",
        )
        self.expect(
            '<iq type="result" id="q1" from="pubsub.example.org" to="alice@example.org/desk"/>'
        )
        self.expect(None)

    def test_a_miss_without_permission_reads_as_herald_only_once_proven_open(self) -> None:
        self.start()
        request = f'<pubsub xmlns="{PS}"><items node="feed" max_items="1"/></pubsub>'
        self.ask(request)
        self.answer(self.expect_check("feed"), meta("open"))
        self.relayed(request, ITEMS, "q1")
        # Known open a moment ago: the next miss is read at once, as Herald.
        self.ask(request, iq_id="q2")
        self.relayed(request, ITEMS, "q2")
        self.expect(None)

    def test_a_miss_on_a_node_found_closed_is_refused_without_reading_it(self) -> None:
        self.start()
        self.ask(f'<pubsub xmlns="{PS}"><items node="feed"/></pubsub>')
        self.answer(self.expect_check("feed"), meta("whitelist"))
        self.expect_refused("q1")
        # and the next request is refused at once: no second look upstream
        self.ask(f'<pubsub xmlns="{PS}"><items node="feed"/></pubsub>', iq_id="q2")
        self.expect_refused("q2")
        self.expect(None)

    def test_a_privileged_miss_goes_as_the_user_until_the_node_is_known_open(self) -> None:
        self.start()
        self.deliver(ADVERT)
        request = f'<pubsub xmlns="{PS}"><items node="feed"/></pubsub>'
        self.ask(request)
        first = self.expect(
            f"""<iq type="get" id="*" from="pubsub.example.org" to="alice@example.org">
              <privileged_iq xmlns="{PRIV}">
                <iq xmlns="jabber:client" type="get" id="*" from="alice@example.org"
                    to="{ORIGIN}">{request}</iq></privileged_iq></iq>"""
        )
        assert first is not None
        self.answer(self.expect_check("feed"), meta("open"))
        inner_id = first.find(f"{{{PRIV}}}privileged_iq/{{jabber:client}}iq").get("id")  # type: ignore[union-attr]
        self.answer(
            first,
            f"""<privilege xmlns="{PRIV}"><forwarded xmlns="{FWD}">
                <iq xmlns="jabber:client" type="result" id="{inner_id}" from="{ORIGIN}"
                    to="alice@example.org">{ITEMS}</iq></forwarded></privilege>""",
            frm="alice@example.org",
        )
        self.expect_result("q1", ITEMS)
        self.ask(request, iq_id="q2")
        self.relayed(request, ITEMS, "q2")
        self.expect(None)

    def test_upstream_errors_are_relayed_with_their_condition(self) -> None:
        self.start()
        self.proxy.open_nodes.note((ORIGIN, "feed"), "open", self.proxy.loop.time())
        request = f'<pubsub xmlns="{PS}"><items node="feed"/></pubsub>'
        self.ask(request)
        self.upstream_error(self.expect_upstream(request), "item-not-found")
        self.expect(
            f"""<iq type="error" id="q1" from="pubsub.example.org" to="alice@example.org/desk">
              <error type="cancel"><item-not-found xmlns="{ERR}"/></error></iq>"""
        )

    def test_a_truncated_node_answers_only_what_its_newest_items_answer(self) -> None:
        from component.storage.records import COMPLETED, ItemInput

        self.start()
        cache, loop = self.proxy.cache, self.proxy.loop

        async def cache_truncated_node() -> int:
            node = await cache.ensure(ORIGIN, "blog", None)
            # as a sync in this run leaves it
            node = await cache.set_state(node, confirm=True, sync_state=COMPLETED, shareable=True)
            items = [ItemInput(i, f'<x xmlns="urn:x">{i}</x>') for i in "bc"]
            await cache.upsert_items(node, items)
            node = await cache.set_state(node, truncated=True)  # "a" is left upstream
            return node.id

        node_id = loop.run_until_complete(cache_truncated_node())
        # known open, verified just now: nothing else goes upstream during the test
        self.proxy._verified[node_id] = loop.time()
        self.proxy.synchroniser.reconciler.compared[node_id] = loop.time()
        self.proxy.open_nodes.note((ORIGIN, "blog"), "open", loop.time())
        self.ask(f'<pubsub xmlns="{PS}"><items node="blog" max_items="1"/></pubsub>')
        self.expect(
            f"""<iq type="result" id="q1" from="pubsub.example.org" to="alice@example.org/desk">
              <pubsub xmlns="{PS}"><items node="blog">
              <item id="c"><x xmlns="urn:x">c</x></item></items></pubsub></iq>"""
        )
        all_items = f'<pubsub xmlns="{PS}"><items node="blog"/></pubsub>'
        self.ask(all_items, iq_id="q2")
        self.relayed(all_items, all_items, "q2")
        self.expect(None)

    def _cache_blog(self) -> int:
        """A node synced in this run, whose openness nobody checked lately; its id."""
        from component.storage.records import COMPLETED, ItemInput

        cache = self.proxy.cache

        async def cache_it() -> int:
            node = await cache.ensure(ORIGIN, "blog", None)
            node = await cache.set_state(node, confirm=True, sync_state=COMPLETED, shareable=True)
            await cache.upsert_items(node, [ItemInput("c", '<x xmlns="urn:x">c</x>')])
            return node.id

        return self.proxy.loop.run_until_complete(cache_it())

    def test_a_hit_on_a_quiet_node_waits_for_its_openness_check(self) -> None:
        self.start()
        self._cache_blog()
        self.ask(f'<pubsub xmlns="{PS}"><items node="blog"/></pubsub>')
        self.answer(self.expect_check("blog"), meta("open"))
        # never compared with upstream in this run: item ids, then Herald's subscription
        self.answer(
            self.expect_upstream(f'<query xmlns="{DISCO_ITEMS}" node="blog"/>'),
            f'<query xmlns="{DISCO_ITEMS}" node="blog"><item jid="{ORIGIN}" name="c"/></query>',
        )
        self.answer(
            self.expect_upstream(f'<pubsub xmlns="{PS}"><subscriptions node="blog"/></pubsub>'),
            f"""<pubsub xmlns="{PS}"><subscriptions node="blog"><subscription node="blog"
                 jid="pubsub.example.org" subscription="subscribed"/></subscriptions></pubsub>""",
        )
        self.expect_result(
            "q1",
            f"""<pubsub xmlns="{PS}"><items node="blog">
              <item id="c"><x xmlns="urn:x">c</x></item></items></pubsub>""",
        )
        # open a moment ago: the next read is answered at once
        self.ask(f'<pubsub xmlns="{PS}"><items node="blog"/></pubsub>', iq_id="q2")
        self.expect_result(
            "q2",
            f"""<pubsub xmlns="{PS}"><items node="blog">
              <item id="c"><x xmlns="urn:x">c</x></item></items></pubsub>""",
        )

    def test_a_comparison_drops_what_upstream_retracted_silently(self) -> None:
        self.start()
        node_id = self._cache_blog()
        # known open, checked just now: only the comparison goes upstream
        self.proxy.open_nodes.note((ORIGIN, "blog"), "open", self.proxy.loop.time())
        self.proxy._verified[node_id] = self.proxy.loop.time()
        self.ask(f'<pubsub xmlns="{PS}"><items node="blog"/></pubsub>')
        self.answer(
            self.expect_upstream(f'<query xmlns="{DISCO_ITEMS}" node="blog"/>'),
            f'<query xmlns="{DISCO_ITEMS}" node="blog"/>',  # "c" is gone upstream
        )
        self.answer(
            self.expect_upstream(f'<pubsub xmlns="{PS}"><subscriptions node="blog"/></pubsub>'),
            f"""<pubsub xmlns="{PS}"><subscriptions node="blog"><subscription node="blog"
                 jid="pubsub.example.org" subscription="subscribed"/></subscriptions></pubsub>""",
        )
        self.expect_result("q1", f'<pubsub xmlns="{PS}"><items node="blog"/></pubsub>')

    def test_a_quiet_node_found_closed_is_not_served_from_the_cache(self) -> None:
        self.start()
        self._cache_blog()
        self.ask(f'<pubsub xmlns="{PS}"><items node="blog"/></pubsub>')
        self.answer(self.expect_check("blog"), meta("whitelist"))
        self.expect_refused("q1")  # as the user only, and alice's host grants nothing

    def test_a_node_that_does_not_exist_is_item_not_found(self) -> None:
        self.start()
        self.ask(f'<pubsub xmlns="{PS}"><items node="nope"/></pubsub>')
        self.upstream_error(self.expect_check("nope"), "item-not-found")
        self.expect(
            f"""<iq type="error" id="q1" from="pubsub.example.org" to="alice@example.org/desk">
              <error type="cancel"><item-not-found xmlns="{ERR}"/>
              <text xmlns="{ERR}" xml:lang="en">There is no node 'nope' on {ORIGIN}.</text>
              </error></iq>"""
        )
        self.expect(None)

    def test_a_forwarded_payload_keeps_its_namespaced_attributes(self) -> None:
        # slixmpp's own serialiser would drop thr:count from the published entry.
        self.start()
        self.deliver(ADVERT)
        thr = "http://purl.org/syndication/thread/1.0"
        publish = (
            f'<pubsub xmlns="{PS}"><publish node="feed"><item id="x">'
            f'<entry xmlns="http://www.w3.org/2005/Atom" xmlns:thr="{thr}">'
            '<link rel="replies" thr:count="5"/></entry></item></publish></pubsub>'
        )
        self.ask(publish, "set")
        self.expect(
            f"""<iq type="set" id="*" from="pubsub.example.org" to="alice@example.org">
              <privileged_iq xmlns="{PRIV}">
                <iq xmlns="jabber:client" type="set" id="*" from="alice@example.org"
                    to="{ORIGIN}">{publish}</iq></privileged_iq></iq>"""
        )

    def test_a_disco_set_is_refused_not_left_unanswered(self) -> None:
        # Issue 11: RFC 6120 §8.2.3, every get/set gets one answer; disco has no set.
        self.start()
        for iq_id, namespace in (("s1", DISCO), ("s2", DISCO_ITEMS)):
            self.ask(f'<query xmlns="{namespace}"/>', "set", iq_id)
            self.expect(
                f"""<iq type="error" id="{iq_id}" from="pubsub.example.org"
                     to="alice@example.org/desk"><error type="modify">
                  <bad-request xmlns="{ERR}"/><text xmlns="{ERR}" xml:lang="en">Service
 discovery is queried with type='get'; it has no 'set'.</text></error></iq>""".replace("\n ", " ")
            )
        self.expect(None)

    def _from_elsewhere(self, to: str, payload: str, iq_type: str = "get") -> None:
        self.deliver(
            f'<iq type="{iq_type}" id="r1" from="eve@elsewhere.net/x" to="{to}">{payload}</iq>'
        )

    def _expect_forbidden(self, to: str, to_user: str, text: str) -> None:
        self.expect(
            f"""<iq type="error" id="r1" from="{to}" to="{to_user}"><error type="auth">
              <forbidden xmlns="{ERR}"/><text xmlns="{ERR}" xml:lang="en">{text}</text>
              </error></iq>"""
        )

    def test_a_remote_requester_reaches_no_other_service_through_the_proxy(self) -> None:
        self.start()
        escaped = "pubsub.remote.org@pubsub.example.org"
        self._from_elsewhere(escaped, f'<pubsub xmlns="{PS}"><items node="blog"/></pubsub>')
        self._expect_forbidden(
            escaped,
            "eve@elsewhere.net/x",
            "Only users of example.org may reach other services through this proxy.",
        )
        self.expect(None)

    def test_a_remote_requester_does_not_write_through_the_proxy(self) -> None:
        self.start()
        self._from_elsewhere(
            "pubsub.example.org",
            f'<pubsub xmlns="{PS}"><publish node="blog"><item id="x"/></publish></pubsub>',
            "set",
        )
        self._expect_forbidden(
            "pubsub.example.org",
            "eve@elsewhere.net/x",
            "Only users of example.org may write or subscribe through this proxy.",
        )
        self.expect(None)

    def test_no_requester_makes_the_proxy_reach_an_ip_address(self) -> None:
        self.start()
        self.deliver(
            '<iq type="get" id="r1" from="alice@example.org/desk" to="10.0.0.1@pubsub.example.org">'
            f'<pubsub xmlns="{PS}"><items node="blog"/></pubsub></iq>'
        )
        self._expect_forbidden(
            "10.0.0.1@pubsub.example.org",
            "alice@example.org/desk",
            "The proxy reaches XMPP services by name, never an IP address.",
        )
        self.expect(None)
