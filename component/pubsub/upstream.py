"""Sending requests upstream: as Herald itself, or as the requesting user (XEP-0356).

Every request is bounded in time; an upstream that does not answer becomes
remote-server-timeout. Errors keep their original <error/> element so the proxy can
relay the exact conditions.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Literal
from xml.etree import ElementTree as ET

from slixmpp.exceptions import IqError, IqTimeout

from component import metrics
from component.xmpp.errors import make_error
from component.xmpp.namespaces import CLIENT_NS, FORWARD_NS, PUBSUB_NS, STANZAS_NS
from component.xmpp.privilege import HostPrivileges

if TYPE_CHECKING:
    from component.xmpp.connection import ServiceComponent

UPSTREAM_TIMEOUT = 10.0
IqType = Literal["get", "set"]


class UpstreamError(Exception):
    """Upstream refused or failed; `error` is the <error/> element to relay."""

    def __init__(self, error: ET.Element, text: str) -> None:
        super().__init__(text)
        self.error = error
        self.text = text

    @property
    def condition(self) -> str:
        """The defined condition's local name (e.g. 'item-not-found')."""
        for child in self.error:
            if child.tag.startswith(f"{{{STANZAS_NS}}}") and not child.tag.endswith("}text"):
                return child.tag.partition("}")[2]
        return "undefined-condition"


def _error_of(iq: ET.Element) -> ET.Element:
    for child in iq:
        if child.tag.endswith("}error"):
            return child
    return make_error("undefined-condition", "Upstream answered with an empty error.")


class Upstream:
    """Issues IQs for a component and times them."""

    def __init__(self, component: ServiceComponent, timeout: float = UPSTREAM_TIMEOUT) -> None:
        self.component = component
        self.timeout = timeout
        # Ids of the inner, privileged requests: unique per process and across restarts.
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    async def as_herald(self, iq_type: IqType, to: str, payload: ET.Element) -> ET.Element:
        """Send payload in an IQ from Herald's own JID; returns the result <iq/>."""
        iq = self.component.make_iq(ito=to, itype=iq_type, ifrom=self.component.boundjid.bare)
        iq.append(payload)
        return await self._send(iq, to)

    async def as_user(
        self,
        privileges: HostPrivileges,
        user: str,
        iq_type: IqType,
        to: str,
        payload: ET.Element,
    ) -> ET.Element:
        """Send payload as `user` (a bare JID of privileges.host) via a privileged IQ."""
        inner = ET.Element(
            f"{{{CLIENT_NS}}}iq",
            {"type": iq_type, "id": f"h{self._prefix}-{next(self._ids)}", "from": user, "to": to},
        )
        inner.append(payload)
        outer = self.component.make_iq(ito=user, itype=iq_type, ifrom=self.component.boundjid.bare)
        wrapper = ET.SubElement(outer.xml, f"{{{privileges.namespace}}}privileged_iq")
        wrapper.append(inner)
        reply = await self._send(outer, to)
        forwarded = reply.find(f"{{{privileges.namespace}}}privilege/{{{FORWARD_NS}}}forwarded")
        result = None if forwarded is None else forwarded.find(f"{{{CLIENT_NS}}}iq")
        if result is None:
            raise UpstreamError(
                make_error(
                    "internal-server-error",
                    "The server's privileged-IQ reply carried no forwarded answer.",
                ),
                "malformed privileged reply",
            )
        if result.get("type") == "error":
            raise UpstreamError(_error_of(result), "upstream error")
        return result

    async def _send(self, iq: object, to: str) -> ET.Element:
        if not self.component.connected_event.is_set():
            # Fail at once: a request sent now would wait for a reply that cannot come.
            metrics.PUBSUB_UPSTREAM_REQUESTS.labels(outcome="disconnected").inc()
            raise UpstreamError(
                make_error(
                    "remote-server-timeout",
                    "Herald is not connected to its XMPP server at the moment.",
                    "wait",
                ),
                "disconnected",
            )
        started = time.perf_counter()
        outcome = "ok"
        try:
            reply = await iq.send(timeout=self.timeout)  # type: ignore[attr-defined]
            xml: ET.Element = reply.xml
            # slixmpp's Iq.send closure refers to itself; detaching the tree lets each
            # reply (~130 elements) be freed at once instead of by the cycle collector.
            reply.xml = ET.Element("detached")
            return xml
        except IqError as exc:
            outcome = "error"
            raise UpstreamError(_error_of(exc.iq.xml), "upstream error") from None
        except IqTimeout:
            outcome = "timeout"
            raise UpstreamError(
                make_error(
                    "remote-server-timeout",
                    f"{to} did not answer within {self.timeout:g} s.",
                    "wait",
                ),
                "timeout",
            ) from None
        finally:
            metrics.PUBSUB_UPSTREAM_SECONDS.observe(time.perf_counter() - started)
            metrics.PUBSUB_UPSTREAM_REQUESTS.labels(outcome=outcome).inc()


async def set_subscription(
    upstream: Upstream,
    action: Literal["subscribe", "unsubscribe"],
    service: str,
    node: str,
    jid: str,
    subid: str | None = None,
) -> ET.Element | None:
    """Ask `service`, as Herald, to subscribe or unsubscribe `jid` (Herald's JID, or a
    resource of it) to `node`; the <subscription/> its reply carries, if any."""
    pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
    attrs = {"node": node, "jid": jid}
    if subid is not None:
        attrs["subid"] = subid
    ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}{action}", attrs)
    reply = await upstream.as_herald("set", service, pubsub)
    return reply.find(f".//{{{PUBSUB_NS}}}subscription")
