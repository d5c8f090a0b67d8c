"""The proxy's safety rule: how one request is answered (pure).

Herald reads upstream as itself, so whatever it answers from the cache, or reads as
itself, is what *anyone* could read. The whole rule is `decide()`, below; the
handlers only gather its inputs and carry out what it returns.

    request          cache                 access (within 5 s)  ->  answer
    write / owner    -                     -                         as the user
    disco#info       -                     -                         as Herald (public)
    items, or a      serves, answers,      open, compared            from the cache
     node's          compared within the   unknown                   check first
     disco#items     reconcile interval    open, comparison due      compare first
    node disco#items otherwise             -                         as the user
    items            otherwise             missing                   item-not-found
                                           open (not PEP)            as Herald
                                           unknown, no privilege     check first
                                           anything else             as the user

"As the user" means a XEP-0356 privileged IQ; without that permission the request
is refused (forbidden), never made as Herald. A failed check fails the request; a
comparison that cannot be made leaves the cache out of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from component.pubsub.openness import Access

# read: items; listing: a node's disco#items (its item ids: content, like items);
# disco-info: metadata, and a service's node list; write: everything else.
Kind = Literal["read", "listing", "disco-info", "write"]
Comparison = Literal["done", "due", "failed"]


class Action(Enum):
    """What to do with a request."""

    FROM_CACHE = "from the cache"
    CHECK_FIRST = "check the node's access model, then decide again"
    COMPARE_FIRST = "compare the node with upstream, then decide again"
    AS_HERALD = "read upstream as Herald"
    AS_USER = "forward as the user"
    REFUSE_FORBIDDEN = "refuse: forbidden"
    REFUSE_MISSING = "refuse: item-not-found"


@dataclass(frozen=True)
class Situation:
    """Everything the rule looks at, as plain values.

    cached: the node is in the cache and in sync here (completed, shareable,
    fetched since the last connection). answers: its items answer this request
    exactly (a truncated node answers only what its newest items answer).
    access: what a check of the node's metadata found within the last few seconds,
    None if nothing that recent is known. comparison: whether the node agreed with
    upstream within the reconcile interval (or needs no comparison).
    """

    kind: Kind
    cached: bool = False
    answers: bool = False
    access: Access | None = None
    comparison: Comparison = "done"
    pep: bool = False  # a PEP service: its metadata is hidden from Herald
    privileged: bool = False  # the requester's server lets Herald act as them


def decide(s: Situation) -> Action:
    """The one rule (see the module's table)."""
    if s.kind == "write":
        return _as_user(s)
    if s.kind == "disco-info":
        return Action.AS_HERALD
    if s.cached and s.answers and not s.pep and s.comparison != "failed":
        if s.access is None:
            return Action.CHECK_FIRST
        if s.access == "open":
            return Action.COMPARE_FIRST if s.comparison == "due" else Action.FROM_CACHE
    if s.kind == "listing" or s.pep:
        return _as_user(s)
    if s.access == "missing":
        return Action.REFUSE_MISSING
    if s.access == "open":
        return Action.AS_HERALD
    if s.access is None and not s.privileged:
        return Action.CHECK_FIRST
    return _as_user(s)


def _as_user(s: Situation) -> Action:
    return Action.AS_USER if s.privileged else Action.REFUSE_FORBIDDEN
