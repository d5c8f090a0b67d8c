"""Whether a node's cached items may be shared between requesters (pure).

Herald reads upstream as itself. What it caches may be served to anyone only when
the node says anyone may read it: `pubsub#access_model` = open, and, where upstream
publishes XEP-0460 caching hints, the hints say every reader sees the same items.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from component.pubsub.openness import Access
from component.xmpp.namespaces import DATA_FORMS_NS
from component.xmpp.numbers import count_in

META_FORM_TYPE = "http://jabber.org/protocol/pubsub#meta-data"
HINTS = "{urn:xmpp:pubsub-caching:0}"


@dataclass(frozen=True)
class NodeMeta:
    """What a node's disco#info metadata says about reading and caching it."""

    exists: bool
    access_model: str | None = None
    hints: dict[str, str] | None = None  # XEP-0460 fields without their prefix
    node_type: str | None = None  # pubsub#type: the payload namespace, where given
    max_items: int | None = None  # pubsub#max_items, where given as a number
    item_expire: int | None = None  # pubsub#item_expire in seconds, where given
    # pubsub#presence_based_delivery, where the metadata gives it (neither Prosody 0.12
    # nor ejabberd 23.01 does: it is in their owner-only configuration form)
    presence_based: bool | None = None

    @property
    def always_notify(self) -> bool:
        """Upstream promises a notification for every change (XEP-0460)."""
        return self.hints is not None and _truthy(self.hints.get("always-notify"))

    @property
    def cacheable(self) -> bool:
        """Shareable, and items do not vanish upstream without a notification."""
        return shareable(self) and self.item_expire is None


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true")


def parse_node_meta(query: Element) -> NodeMeta:
    """Read a disco#info <query/> for a node (identities, features, metadata form)."""
    fields: dict[str, str] = {}
    for form in query.findall(f"{{{DATA_FORMS_NS}}}x"):
        values = {
            f.get("var", ""): (f.findtext(f"{{{DATA_FORMS_NS}}}value") or "")
            for f in form.findall(f"{{{DATA_FORMS_NS}}}field")
        }
        if values.get("FORM_TYPE") == META_FORM_TYPE:
            fields = values
            break
    hints = {k[len(HINTS) :]: v for k, v in fields.items() if k.startswith(HINTS)}
    return NodeMeta(
        exists=True,
        access_model=fields.get("pubsub#access_model") or None,
        hints=hints or None,
        node_type=fields.get("pubsub#type") or None,
        # "max" (XEP-0060's integer-or-max) and 0 read as no limit
        max_items=count_in(fields.get("pubsub#max_items"), minimum=1),
        item_expire=count_in(fields.get("pubsub#item_expire"), minimum=1),
        presence_based=(
            _truthy(fields["pubsub#presence_based_delivery"])
            if fields.get("pubsub#presence_based_delivery")
            else None
        ),
    )


def access_of(meta: NodeMeta) -> Access:
    """open (shareable), closed, or missing."""
    if not meta.exists:
        return "missing"
    return "open" if shareable(meta) else "closed"


def shareable(meta: NodeMeta) -> bool:
    """Whether items read as Herald may be served to any requester."""
    if not meta.exists or meta.access_model != "open":
        return False
    if meta.hints is None:
        return True
    if meta.hints.get("persistence") == "transient":
        return False
    return _truthy(meta.hints.get("consistent-items")) and _truthy(meta.hints.get("consistent-set"))
