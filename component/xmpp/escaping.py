"""XEP-0106 JID escaping, and the proxy addressing built on it.

The pubsub proxy is addressed as ``ESCAPED@proxy.domain``, where the localpart is the
XEP-0106-escaped JID of the proxied service or PEP account; the bare proxy JID proxies
the configured upstream.

Escaping follows the normative rules of XEP-0106 (§4 business rules 6 and 7, §4.4
exceptions): a backslash is escaped to ``\\5c`` only when it starts one of the ten escape
sequences, so ``foo\\bar`` is left unchanged. Rows 9-11 of the XEP's example table escape
every backslash instead; both forms unescape to the same string (see the tests).
"""

from __future__ import annotations

from slixmpp.jid import JID, InvalidJID

_ESCAPES: dict[str, str] = {
    " ": "\\20",
    '"': "\\22",
    "&": "\\26",
    "'": "\\27",
    "/": "\\2f",
    ":": "\\3a",
    "<": "\\3c",
    ">": "\\3e",
    "@": "\\40",
    "\\": "\\5c",
}
# Case is significant: only these lowercase hex pairs are escape sequences.
_UNESCAPES: dict[str, str] = {seq[1:]: char for char, seq in _ESCAPES.items()}


def escape_localpart(s: str) -> str:
    """Escape ``s`` for use as a JID localpart (XEP-0106).

    Raises ValueError if ``s`` starts or ends with a space, because an escaped
    localpart must not start or end with ``\\20``.
    """
    if s[:1] == " " or s[-1:] == " ":
        raise ValueError(f"{s!r}: a JID localpart cannot start or end with a space")
    out: list[str] = []
    for i, char in enumerate(s):
        if char == "\\":
            # A backslash that is not followed by an escape sequence stays literal, so
            # existing JIDs containing backslashes keep their meaning (XEP-0106 §4.4).
            out.append("\\5c" if s[i + 1 : i + 3] in _UNESCAPES else "\\")
        else:
            out.append(_ESCAPES.get(char, char))
    return "".join(out)


def unescape_localpart(s: str) -> str:
    """Unescape a XEP-0106-escaped localpart.

    Only the ten defined sequences are decoded; partial or unknown sequences are kept.
    Raises ValueError if ``s`` starts or ends with ``\\20``, which XEP-0106 forbids.
    """
    if s.startswith("\\20") or s.endswith("\\20"):
        raise ValueError(f"{s!r}: an escaped localpart cannot start or end with \\20")
    out: list[str] = []
    i = 0
    while i < len(s):
        char = s[i]
        decoded = _UNESCAPES.get(s[i + 1 : i + 3]) if char == "\\" else None
        if decoded is None:
            out.append(char)
            i += 1
        else:
            out.append(decoded)
            i += 3
    return "".join(out)


def _bare_jid(value: str, what: str) -> JID:
    """Parse ``value`` as a bare JID or a domain, with a readable ValueError."""
    try:
        jid = JID(value)
    except InvalidJID as exc:
        raise ValueError(f"{what} {value!r} is not a valid JID: {exc}") from exc
    if not jid.domain:
        raise ValueError(f"{what} is empty")
    if jid.resource:
        raise ValueError(f"{what} {value!r} must be a bare JID or a domain, not a full JID")
    return jid


def proxied_target(
    proxy_localpart: str | None, upstream: str, *, proxy_domain: str | None = None
) -> str:
    """Return the service or PEP account that a proxy JID's localpart designates.

    No localpart designates ``upstream``. Otherwise the unescaped localpart must be a
    bare JID or a domain, returned normalised. If ``proxy_domain`` is given, a target on
    that domain is refused, since the proxy would then forward requests to itself.
    Raises ValueError with a readable text when the localpart is unusable.
    """
    if not proxy_localpart:
        return upstream
    target = _bare_jid(unescape_localpart(proxy_localpart), "proxied address")
    if proxy_domain is not None and target.domain == _bare_jid(proxy_domain, "proxy").domain:
        raise ValueError(f"proxied address {target.bare!r} points back at the proxy itself")
    bare: str = target.bare
    return bare


def proxy_jid_for(target: str, proxy_domain: str, upstream: str) -> str:
    """Return the proxy JID that designates ``target``; the inverse of proxied_target."""
    jid = _bare_jid(target, "target")
    if jid.bare == _bare_jid(upstream, "upstream").bare:
        return proxy_domain
    address = f"{escape_localpart(jid.bare)}@{proxy_domain}"
    full: str = _bare_jid(address, "proxy address").bare
    return full
