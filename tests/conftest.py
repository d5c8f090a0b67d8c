"""Shared fixtures: real servers on loopback, databases on SQLite and PostgreSQL.

Under CI (any truthy value: 1, true, yes, on) a missing Prosody or PostgreSQL fails
the test instead of skipping it.

PostgreSQL: $HERALD_TEST_POSTGRES_URL, else the URL tests/bootstrap.sh --postgres
recorded in .pgtest/url (the machine's server, or a private cluster it runs), else
postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from component.storage import migrate
from component.storage.engine import create_engine, session_factory
from tests.harness.ejabberd import Ejabberd
from tests.harness.prosody import ComponentSpec, Prosody

XmppServer = Prosody | Ejabberd

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")
# Written by tests/bootstrap.sh --postgres: the PostgreSQL it checked or started.
RECORDED_POSTGRES_URL = ROOT / ".pgtest" / "url"


def postgres_test_url() -> str:
    """The test PostgreSQL: the environment, else what the bootstrap recorded, else default."""
    if url := os.environ.get("HERALD_TEST_POSTGRES_URL", "").strip():
        return url
    if RECORDED_POSTGRES_URL.is_file():
        return RECORDED_POSTGRES_URL.read_text(encoding="utf-8").strip()
    return "postgresql+psycopg://postgres@127.0.0.1:5432/test"


POSTGRES_URL = postgres_test_url()

MULTICAST_JID, MULTICAST_SECRET = "multicast.localhost", "multicast-secret"
# A second multicast component that may only send through XEP-0356 privileges.
PRIVILEGED_JID, PRIVILEGED_SECRET = "mc-priv.localhost", "mc-priv-secret"
# Other "domains": VirtualHosts on the same Prosody. remote.localhost runs a multicast
# service of its own (a second Herald); plain.localhost has none.
REMOTE_DOMAIN, PLAIN_DOMAIN = "remote.localhost", "plain.localhost"
REMOTE_MULTICAST_JID, REMOTE_MULTICAST_SECRET = "multicast.remote.localhost", "remote-secret"
PROXY_JID, PROXY_SECRET = "pubsub.localhost", "pubsub-secret"
UPSTREAM_JID = "pubsub-origin.localhost"
OWNER = "olivia@localhost"
SILENT_JID, SILENT_SECRET = "silent.localhost", "silent-secret"  # a hung upstream
USERS = {
    "olivia": "olivia-pw",  # owns the upstream pubsub nodes (an admin of Prosody's pubsub)
    "alice": "alice-pw",
    "bob": "bob-pw",
    "carol": "carol-pw",
    "dave@remote.localhost": "dave-pw",
    "erin@plain.localhost": "erin-pw",
}


def missing(what: str) -> NoReturn:
    """Skip locally, fail in CI: CI must never pass by skipping integration tests."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI={os.environ['CI']})")
    pytest.skip(f"{what} is not available")


def standard_prosody(root: Path) -> Prosody:
    """The Prosody most integration tests share: both Herald components and an upstream."""
    return Prosody(
        root=root,
        components=[
            # trusted mode: Prosody lets the component send as users
            ComponentSpec(MULTICAST_JID, MULTICAST_SECRET, ["validate_from_addresses = false"]),
            ComponentSpec(PRIVILEGED_JID, PRIVILEGED_SECRET, ['modules_enabled = { "privilege" }']),
            ComponentSpec(
                REMOTE_MULTICAST_JID, REMOTE_MULTICAST_SECRET, ["validate_from_addresses = false"]
            ),
            ComponentSpec(PROXY_JID, PROXY_SECRET, ['modules_enabled = { "privilege" }']),
            ComponentSpec(SILENT_JID, SILENT_SECRET),
        ],
        extra_hosts=[REMOTE_DOMAIN, PLAIN_DOMAIN],
        host_options=[
            "privileged_entities = {",
            f'  ["{PRIVILEGED_JID}"] = {{ message = "outgoing" }};',
            f'  ["{PROXY_JID}"] = {{ iq = {{',
            '    ["http://jabber.org/protocol/pubsub"] = "both";',
            '    ["http://jabber.org/protocol/pubsub#owner"] = "both";',
            '    ["http://jabber.org/protocol/disco#items"] = "get";',
            "  } };",
            "}",
        ],
        users=USERS,
        pubsub_component=UPSTREAM_JID,
        # The proxy is deliberately no admin upstream: it must read what anyone can.
        pubsub_admins=[OWNER],
    )


def standard_ejabberd(root: Path) -> Ejabberd:
    """The same topology on ejabberd 23.01.

    remote.localhost's multicast service is ejabberd's own mod_multicast, advertising
    a limit of 2 recipients per message (XEP-0128 form), instead of a second Herald.
    """
    return Ejabberd(
        root=root,
        extra_hosts=[REMOTE_DOMAIN, PLAIN_DOMAIN],
        # as config/ejabberd.yml: only the trusted multicast component skips the check
        trusted_components={MULTICAST_JID: MULTICAST_SECRET},
        checked_components={
            PROXY_JID: PROXY_SECRET,
            PRIVILEGED_JID: PRIVILEGED_SECRET,
            SILENT_JID: SILENT_SECRET,
        },
        message_privileged=[PRIVILEGED_JID],
        # presence-based delivery at the proxy (issue 13)
        presence_privileged=[PROXY_JID],
        pubsub_host=UPSTREAM_JID,
        remote_multicast={REMOTE_DOMAIN: 2},
        users=USERS,
    )


@contextlib.contextmanager
def running_ejabberd() -> Iterator[Ejabberd]:
    """A throwaway ejabberd, in a directory of its own.

    Outside pytest's temporary directories: every pytest session that starts on the
    machine resets /tmp/pytest-of-root to 0700, and the ejabberd user, which runs the
    node, could then no longer reach its files (seen with two suites at once).
    """
    if not Ejabberd.available():
        missing("ejabberd")
    root = Path(tempfile.mkdtemp(prefix="herald-ejabberd-"))
    server = standard_ejabberd(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ejabberd() -> Iterator[Ejabberd]:
    """An ejabberd shared by the session."""
    with running_ejabberd() as server:
        yield server


@pytest.fixture(scope="session", params=["prosody", "ejabberd"])
def server(request: pytest.FixtureRequest) -> XmppServer:
    """Each server Herald supports, in turn: the suites that take it run on both."""
    found: XmppServer = request.getfixturevalue(request.param)
    return found


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prosody]:
    """A Prosody shared by the session; tests that stop it use `own_prosody` instead."""
    if not Prosody.available():
        missing("Prosody")
    server = standard_prosody(tmp_path_factory.mktemp("prosody"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_prosody(tmp_path: Path) -> Iterator[Prosody]:
    """A Prosody this test alone uses, free to stop and restart."""
    if not Prosody.available():
        missing("Prosody")
    server = standard_prosody(tmp_path / "prosody")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The admin URL of the test PostgreSQL, checked once per session."""
    import psycopg

    url = make_url(POSTGRES_URL)
    try:
        with psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database,
            connect_timeout=3,
        ):
            pass
    except psycopg.Error as exc:
        missing(
            f"PostgreSQL at {url.render_as_string(hide_password=True)} ({exc}; "
            "tests/bootstrap.sh --postgres sets one up)"
        )
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: an SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'herald.db'}"
        return
    admin_url = request.getfixturevalue("postgres_url")
    name = f"herald_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh database at the newest schema (SQLite and PostgreSQL)."""
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    yield session_factory(engine)
    await engine.dispose()
