"""Golden-XML stream tests of the XEP-0050 cache commands on the pubsub JID: who sees
and may run them, the first stage's form, and the errors XEP-0050 names."""

from __future__ import annotations

from component.config import PubsubSettings
from component.pubsub.rules import Registry
from component.pubsub.service import PubsubComponent
from tests.unit.stream import StreamTest

CMD = "http://jabber.org/protocol/commands"
ITEMS = "http://jabber.org/protocol/disco#items"
ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
FORM = "jabber:x:data"
ORIGIN = "pubsub-origin.example.org"
WHILE_FETCHING = "Herald serves the node from upstream until the fetch completes."
EXPIRED = "This session is unknown or has expired; execute the command again."
NOT_PROXIED = "Commands are offered at pubsub.example.org only, not proxied."
ADMIN, USER = "boss@example.org/desk", "alice@example.org/desk"


class AdminCommandStanzaTest(StreamTest):
    """A PubsubComponent whose pubsub.admins is boss@example.org."""

    def start(self) -> None:
        settings = PubsubSettings(
            jid="pubsub.example.org",
            secret="s",  # type: ignore[arg-type]
            upstream=ORIGIN,
            admins=["Boss@example.org"],
        )
        loop = self.boot(
            lambda sessions: PubsubComponent(
                settings,
                "localhost",
                5347,
                sessions,
                Registry.from_config([]),
                trusted_hosts=frozenset({"example.org"}),
            )
        )
        assert isinstance(self.xmpp, PubsubComponent)
        loop.run_until_complete(self.xmpp.prepare())

    def send_from(self, frm: str, payload: str, iq_type: str = "set", to: str = "") -> None:
        self.deliver(
            f'<iq type="{iq_type}" id="c1" from="{frm}" '
            f'to="{to or "pubsub.example.org"}">{payload}</iq>'
        )

    def expect_error(self, to: str, error: str, frm: str = "pubsub.example.org") -> None:
        self.expect(f'<iq type="error" id="c1" from="{frm}" to="{to}">{error}</iq>')

    def test_the_command_list_is_for_admins_only(self) -> None:
        self.start()
        self.send_from(USER, f'<query xmlns="{ITEMS}" node="{CMD}"/>', "get")
        self.expect(
            f"""<iq type="result" id="c1" from="pubsub.example.org" to="{USER}">
              <query xmlns="{ITEMS}" node="{CMD}"/></iq>"""
        )
        self.send_from(ADMIN, f'<query xmlns="{ITEMS}" node="{CMD}"/>', "get")
        self.expect(
            f"""<iq type="result" id="c1" from="pubsub.example.org" to="{ADMIN}">
              <query xmlns="{ITEMS}" node="{CMD}">
                <item jid="pubsub.example.org" node="stats" name="Cache statistics"/>
                <item jid="pubsub.example.org" node="resync" name="Fetch a cached node again"/>
                <item jid="pubsub.example.org" node="purge" name="Purge cached nodes"/>
              </query></iq>"""
        )
        self.expect(None)  # answered here: nothing went upstream

    def test_others_get_forbidden(self) -> None:
        self.start()
        self.send_from(USER, f'<command xmlns="{CMD}" node="purge" action="execute"/>')
        self.expect_error(
            USER,
            f"""<error type="auth"><forbidden xmlns="{ERR}"/><text xmlns="{ERR}"
              xml:lang="en">Only the administrators in pubsub.admins may run commands.</text>
              </error>""",
        )
        self.expect(None)

    def test_the_first_stage_of_resync_is_its_form(self) -> None:
        self.start()
        self.send_from(ADMIN, f'<command xmlns="{CMD}" node="resync" action="execute"/>')
        self.expect(
            f"""<iq type="result" id="c1" from="pubsub.example.org" to="{ADMIN}">
              <command xmlns="{CMD}" node="resync" sessionid="*" status="executing">
                <actions execute="complete"><complete/></actions>
                <x xmlns="{FORM}" type="form"><title>Fetch a cached node again</title>
                  <instructions>{WHILE_FETCHING}</instructions>
                  <field var="service" type="text-single" label="Service JID"><required/>
                    <value>{ORIGIN}</value></field>
                  <field var="node" type="text-single" label="Node"><required/></field>
                </x></command></iq>"""
        )

    def test_malformed_requests_get_the_errors_xep_0050_names(self) -> None:
        self.start()
        self.send_from(ADMIN, f'<command xmlns="{CMD}" node="stats" action="prev"/>')
        self.expect_error(
            ADMIN,
            f"""<error type="modify"><bad-request xmlns="{ERR}"/><text xmlns="{ERR}"
              xml:lang="en">Action 'prev' is not offered here.</text><bad-action
              xmlns="{CMD}"/></error>""",
        )
        self.send_from(
            ADMIN,
            f'<command xmlns="{CMD}" node="purge" sessionid="made-up"><x xmlns="{FORM}" '
            f'type="submit"><field var="node"><value>x</value></field></x></command>',
        )
        self.expect_error(
            ADMIN,
            f"""<error type="modify"><bad-request xmlns="{ERR}"/><text xmlns="{ERR}"
              xml:lang="en">{EXPIRED}</text><bad-sessionid xmlns="{CMD}"/></error>""",
        )
        self.send_from(ADMIN, f'<command xmlns="{CMD}" node="stats"/>', "get")
        self.expect_error(
            ADMIN,
            f"""<error type="modify"><bad-request xmlns="{ERR}"/><text xmlns="{ERR}"
              xml:lang="en">Commands are executed with type='set'.</text></error>""",
        )
        escaped = "pubsub.remote.example@pubsub.example.org"
        self.send_from(ADMIN, f'<command xmlns="{CMD}" node="stats"/>', to=escaped)
        self.expect_error(
            ADMIN,
            f"""<error type="cancel"><feature-not-implemented xmlns="{ERR}"/><text
              xmlns="{ERR}" xml:lang="en">{NOT_PROXIED}</text></error>""",
            frm=escaped,
        )
        self.expect(None)
