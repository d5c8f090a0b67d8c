"""Herald: an XMPP server component providing XEP-0033 multicast and a caching XEP-0060 proxy."""

__version__ = "0.1.0"
