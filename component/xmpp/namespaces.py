"""XML namespaces the edge uses, defined once."""

from __future__ import annotations

COMPONENT_NS = "jabber:component:accept"
CLIENT_NS = "jabber:client"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
XML_NS = "http://www.w3.org/XML/1998/namespace"
DATA_FORMS_NS = "jabber:x:data"
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS_NS = "http://jabber.org/protocol/disco#items"
FORWARD_NS = "urn:xmpp:forward:0"
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER_NS = "http://jabber.org/protocol/pubsub#owner"
PUBSUB_EVENT_NS = "http://jabber.org/protocol/pubsub#event"
PUBSUB_ERRORS_NS = "http://jabber.org/protocol/pubsub#errors"
RSM_NS = "http://jabber.org/protocol/rsm"
SHIM_NS = "http://jabber.org/protocol/shim"
DELAY_NS = "urn:xmpp:delay"
