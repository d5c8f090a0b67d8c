"""SQL for the multicast service: remote-support cache and §5 presence tracking."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from component.storage.convert import from_db
from component.storage.models import MulticastPresence, MulticastRemoteSupport
from component.storage.timing import timed


@dataclass(frozen=True)
class RemoteSupportRecord:
    """A cached discovery answer for one remote domain."""

    domain: str
    service_jid: str | None
    max_message: int | None
    max_presence: int | None
    expires_at: datetime


@timed("get_remote_support")
async def get_remote_support(session: AsyncSession, domain: str) -> RemoteSupportRecord | None:
    """The cached answer for domain, expired or not (the caller checks expires_at)."""
    row = await session.get(MulticastRemoteSupport, domain)
    if row is None:
        return None
    return RemoteSupportRecord(
        row.domain, row.service_jid, row.max_message, row.max_presence, from_db(row.expires_at)
    )


@timed("put_remote_support")
async def put_remote_support(
    session: AsyncSession, record: RemoteSupportRecord, now: datetime
) -> None:
    """Insert or replace the answer for record.domain."""
    row = await session.get(MulticastRemoteSupport, record.domain)
    if row is None:
        row = MulticastRemoteSupport(domain=record.domain)
        session.add(row)
    row.service_jid = record.service_jid
    row.max_message = record.max_message
    row.max_presence = record.max_presence
    row.checked_at = now
    row.expires_at = record.expires_at
    await session.commit()


@timed("purge_remote_support")
async def purge_remote_support(session: AsyncSession, now: datetime) -> int:
    """Drop expired answers; returns how many."""
    result = await session.execute(
        delete(MulticastRemoteSupport).where(MulticastRemoteSupport.expires_at < now)
    )
    await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


@timed("add_presence_recipients")
async def add_presence_recipients(
    session: AsyncSession, sender: str, recipients: Iterable[str], now: datetime
) -> None:
    """Remember that sender's available presence reached recipients through us."""
    wanted = set(recipients)
    existing = set(
        (
            await session.scalars(
                select(MulticastPresence.recipient).where(
                    MulticastPresence.sender == sender,
                    MulticastPresence.recipient.in_(wanted),
                )
            )
        ).all()
    )
    session.add_all(
        MulticastPresence(sender=sender, recipient=r, since=now) for r in sorted(wanted - existing)
    )
    await session.commit()


@timed("remove_presence_recipients")
async def remove_presence_recipients(
    session: AsyncSession, sender: str, recipients: Iterable[str]
) -> None:
    """Forget some of sender's recipients (they got unavailable explicitly)."""
    await session.execute(
        delete(MulticastPresence).where(
            MulticastPresence.sender == sender,
            MulticastPresence.recipient.in_(set(recipients)),
        )
    )
    await session.commit()


@timed("take_presence_recipients")
async def take_presence_recipients(session: AsyncSession, sender: str) -> list[str]:
    """Everyone sender's presence reached through us, forgotten in the same transaction."""
    recipients = list(
        (
            await session.scalars(
                select(MulticastPresence.recipient)
                .where(MulticastPresence.sender == sender)
                .order_by(MulticastPresence.id)
            )
        ).all()
    )
    await session.execute(delete(MulticastPresence).where(MulticastPresence.sender == sender))
    await session.commit()
    return recipients
