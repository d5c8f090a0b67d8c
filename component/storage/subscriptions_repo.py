"""SQL for the subscriptions Herald holds itself at its proxy addresses.

Functions take an ``AsyncSession`` and plain values, return ``LocalSubscription``
records, and commit their own short transaction: a subscription exists once it is
answered, so it is stored before the answer goes out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from component.storage.convert import from_db
from component.storage.models import PubsubLocalSubscription as Row
from component.storage.pubsub_tables import chunks, pairs_in, rowcount
from component.storage.timing import timed


@dataclass(frozen=True)
class LocalSubscription:
    """One subscription held by Herald: who, at which proxy address, to which node."""

    address: str
    service: str
    node: str
    subscriber: str
    subscriber_bare: str
    subid: str
    options: dict[str, Any]
    created: datetime


def _record(row: Row) -> LocalSubscription:
    return LocalSubscription(
        row.address,
        row.service,
        row.node,
        row.subscriber,
        row.subscriber_bare,
        row.subid,
        dict(row.options or {}),
        from_db(row.created),
    )


@timed("add_local_subscription")
async def add(session: AsyncSession, sub: LocalSubscription) -> None:
    """Store a new subscription (its subid is unique)."""
    if sub.created.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    session.add(
        Row(
            address=sub.address,
            service=sub.service,
            node=sub.node,
            subscriber=sub.subscriber,
            subscriber_bare=sub.subscriber_bare,
            subid=sub.subid,
            options=sub.options,
            created=sub.created.astimezone(UTC),
        )
    )
    await session.commit()


@timed("remove_local_subscription")
async def remove(session: AsyncSession, subids: Iterable[str]) -> int:
    """Delete the subscriptions with these subids; returns how many there were."""
    wanted = list(subids)
    if not wanted:
        return 0
    result = await session.execute(delete(Row).where(Row.subid.in_(wanted)))
    await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


@timed("set_local_subscription_options")
async def set_options(session: AsyncSession, subid: str, options: dict[str, Any]) -> bool:
    """Replace a subscription's options; False when there is no such subscription."""
    result = await session.execute(update(Row).where(Row.subid == subid).values(options=options))
    await session.commit()
    return int(result.rowcount) > 0  # type: ignore[attr-defined]


@timed("local_subscriptions_of_node")
async def of_node(session: AsyncSession, service: str, node: str) -> list[LocalSubscription]:
    """Every subscription to the node, at any proxy address, oldest first."""
    rows = await session.scalars(
        select(Row).where(Row.service == service, Row.node == node).order_by(Row.id)
    )
    return [_record(r) for r in rows]


@timed("local_subscriptions_of_subscriber")
async def of_subscriber(
    session: AsyncSession, address: str, subscriber_bare: str
) -> list[LocalSubscription]:
    """Every subscription the bare JID holds at this proxy address, oldest first."""
    rows = await session.scalars(
        select(Row)
        .where(Row.address == address, Row.subscriber_bare == subscriber_bare)
        .order_by(Row.id)
    )
    return [_record(r) for r in rows]


@timed("local_subscriptions_all")
async def all_subscriptions(session: AsyncSession) -> list[LocalSubscription]:
    """Every subscription held, oldest first (loaded at start-up)."""
    return [_record(r) for r in await session.scalars(select(Row).order_by(Row.id))]


@timed("drop_local_subscriptions_of_nodes")
async def drop_nodes(session: AsyncSession, nodes: Iterable[tuple[str, str]]) -> int:
    """Delete every subscription to these (service, node) pairs; returns how many."""
    wanted = list(nodes)
    if not wanted:
        return 0
    removed = 0
    for chunk in chunks(wanted):
        result = await session.execute(delete(Row).where(pairs_in(Row.service, Row.node, chunk)))
        removed += rowcount(result)
    await session.commit()
    return removed
