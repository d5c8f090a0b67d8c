"""The local-subscriptions repository on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.storage import subscriptions_repo as repo
from component.storage.subscriptions_repo import LocalSubscription

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)
ORIGIN = "pubsub-origin.localhost"


def sub(subid: str, subscriber: str = "alice@localhost/a", **kw: object) -> LocalSubscription:
    values: dict[str, object] = {
        "address": "pubsub.localhost",
        "service": ORIGIN,
        "node": "blog",
        "subscriber": subscriber,
        "subscriber_bare": subscriber.partition("/")[0],
        "subid": subid,
        "options": {},
        "created": T0,
    }
    values.update(kw)
    return LocalSubscription(**values)  # type: ignore[arg-type]


async def test_add_list_options_remove(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s:
        await repo.add(s, sub("1"))
        await repo.add(s, sub("2", options={"pubsub#deliver": "0"}))
        # another time zone goes in, UTC comes out
        later = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(seconds=1)
        await repo.add(s, sub("3", "bob@localhost", node="other", created=later))
        await repo.add(s, sub("4", address="x\\40y@pubsub.localhost"))
    async with sessions() as s:
        node = await repo.of_node(s, ORIGIN, "blog")
        assert [r.subid for r in node] == ["1", "2", "4"]
        assert node[1].options == {"pubsub#deliver": "0"}
        assert node[0].created == T0
        assert node[0].created.tzinfo is not None
        mine = await repo.of_subscriber(s, "pubsub.localhost", "alice@localhost")
        assert [r.subid for r in mine] == ["1", "2"]
        assert await repo.set_options(s, "1", {"pubsub#digest": "0"})
        assert not await repo.set_options(s, "nope", {})
        assert await repo.remove(s, ["2", "nope"]) == 1
        everything = await repo.all_subscriptions(s)
        assert [(r.subid, r.options) for r in everything] == [
            ("1", {"pubsub#digest": "0"}),
            ("3", {}),
            ("4", {}),
        ]
        assert everything[1].created == T0 + timedelta(seconds=1)
        assert await repo.drop_nodes(s, [(ORIGIN, "blog")]) == 2
        assert [r.subid for r in await repo.all_subscriptions(s)] == ["3"]


async def test_a_subid_is_unique(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s:
        await repo.add(s, sub("same"))
    async with sessions() as s:
        with pytest.raises(IntegrityError):
            await repo.add(s, sub("same", "bob@localhost"))
