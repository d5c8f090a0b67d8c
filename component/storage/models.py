"""SQLAlchemy table definitions: the pubsub cache and the multicast remote-support cache.

Alembic owns the schema; these classes describe it for queries and for autogenerate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints make migrations portable: SQLite batch mode and PostgreSQL both
# need a stable name to drop or alter a constraint later.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class PubsubNode(Base):
    """A node Herald knows about on some upstream service, and its sync state."""

    __tablename__ = "pubsub_nodes"
    __table_args__ = (UniqueConstraint("service", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(1023))
    name: Mapped[str] = mapped_column(String(1023))
    analyser: Mapped[str | None] = mapped_column(String(255))
    # no-sync | in-progress | completed | error
    sync_state: Mapped[str] = mapped_column(String(32), default="no-sync")
    sync_state_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sync_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who holds the sync right now (process id), so two Heralds on one database
    # never sync the same node at once.
    sync_owner: Mapped[str | None] = mapped_column(String(255))
    sync_lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    subscribed: Mapped[bool] = mapped_column(Boolean, default=False)
    access_model: Mapped[str | None] = mapped_column(String(64))
    shareable: Mapped[bool] = mapped_column(Boolean, default=False)
    # Upstream holds older items than the cache keeps (beyond max_items_per_node):
    # only requests the newest items answer are served from the cache.
    truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The node's pubsub#max_items when its metadata gives one: upstream drops older
    # items silently past it, so the cache must too.
    upstream_max_items: Mapped[int | None] = mapped_column(Integer)
    # When a sync last completed, and why the last one failed (cleared by a success):
    # what `herald cache show` tells the operator.
    last_synced: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(1023))
    last_requested: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    type: Mapped[str | None] = mapped_column(String(255))
    subtype: Mapped[str | None] = mapped_column(String(255))
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    items: Mapped[list[PubsubItem]] = relationship(
        back_populates="node", cascade="all, delete-orphan", passive_deletes=True
    )


class PubsubItem(Base):
    """One cached item: the raw XML exactly as received, plus an optional parsed form."""

    __tablename__ = "pubsub_items"
    __table_args__ = (
        UniqueConstraint("node_id", "item_id"),
        Index("ix_pubsub_items_node_id_created", "node_id", "created"),
        Index("ix_pubsub_items_node_id_updated", "node_id", "updated"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("pubsub_nodes.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(1023))
    publisher: Mapped[str | None] = mapped_column(String(3071))
    data: Mapped[str] = mapped_column(Text)
    parsed: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    node: Mapped[PubsubNode] = relationship(back_populates="items")


class PubsubAdminRequest(Base):
    """A change an administrator made to the cache (CLI or ad-hoc command), for every
    running Herald to apply to what it holds in memory: resync, purged or reset."""

    __tablename__ = "pubsub_admin_requests"
    # Read by "id greater than the last one seen": ids are never reused.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    service: Mapped[str | None] = mapped_column(String(1023))
    node: Mapped[str | None] = mapped_column(String(1023))
    node_id: Mapped[int | None] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MulticastRemoteSupport(Base):
    """Whether a remote domain runs a XEP-0033 service: positive and negative answers."""

    __tablename__ = "multicast_remote_support"

    domain: Mapped[str] = mapped_column(String(1023), primary_key=True)
    service_jid: Mapped[str | None] = mapped_column(String(1023))
    max_message: Mapped[int | None] = mapped_column(Integer)
    max_presence: Mapped[int | None] = mapped_column(Integer)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MulticastPresence(Base):
    """XEP-0033 §5: who received a sender's available presence through the service."""

    __tablename__ = "multicast_presence"
    __table_args__ = (UniqueConstraint("sender", "recipient"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender: Mapped[str] = mapped_column(String(3071), index=True)
    recipient: Mapped[str] = mapped_column(String(3071))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PubsubLocalSubscription(Base):
    """A subscription Herald holds itself, made at a proxy address to a shareable node.

    Herald is subscribed upstream once per node and delivers each notification to
    every such subscriber, from the address it subscribed at.
    """

    __tablename__ = "pubsub_local_subscriptions"
    __table_args__ = (
        Index("ix_pubsub_local_subscriptions_service_node", "service", "node"),
        Index("ix_pubsub_local_subscriptions_address_bare", "address", "subscriber_bare"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(3071))  # the proxy address subscribed at
    service: Mapped[str] = mapped_column(String(1023))  # the upstream service proxied
    node: Mapped[str] = mapped_column(String(1023))
    subscriber: Mapped[str] = mapped_column(String(3071))  # the jid attribute, full or bare
    subscriber_bare: Mapped[str] = mapped_column(String(3071))
    subid: Mapped[str] = mapped_column(String(255), unique=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)  # XEP-0060 §6.3 form values
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
