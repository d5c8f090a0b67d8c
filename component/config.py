"""Configuration: a TOML file validated by pydantic, with HERALD_<SECTION>__<KEY> overrides.

The environment wins over the file, so an operator can keep secrets out of the TOML
(``HERALD_PUBSUB__SECRET=...`` from a systemd credential or EnvironmentFile).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from slixmpp.jid import JID, InvalidJID
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from component.pubsub.rules import AnalyserRule, Registry

MASK = "**********"


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_jid(value: str) -> str:
    try:
        jid = JID(value)
    except InvalidJID as exc:
        raise ValueError(f"not a valid JID: {exc}") from None
    if jid.user or jid.resource:
        raise ValueError("must be a bare domain JID such as 'service.example.org'")
    return jid.bare


def _check_bare_jid(value: str) -> str:
    try:
        jid = JID(value)
    except InvalidJID as exc:
        raise ValueError(f"not a valid JID: {exc}") from None
    if jid.resource or not jid.domain:
        raise ValueError(f"{value!r}: give a bare JID such as 'admin@example.org'")
    return jid.bare


class ServerSettings(_Section):
    """Where the XMPP server's component listener (XEP-0114) is."""

    host: str = "127.0.0.1"
    port: int = Field(default=5347, ge=1, le=65535)


class DatabaseSettings(_Section):
    """The database URL: embedded SQLite by default, or PostgreSQL through psycopg 3."""

    url: SecretStr = SecretStr("sqlite+aiosqlite:///herald.db")

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: SecretStr) -> SecretStr:
        try:
            url = make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError("not a database URL") from None
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+psycopg"):
            raise ValueError(
                f"unsupported driver {url.drivername!r}: use 'sqlite+aiosqlite:///PATH' "
                "or 'postgresql+psycopg://USER@HOST/DB'"
            )
        return value

    def masked(self) -> str:
        """The URL with any password hidden, safe for logs and check-config."""
        return make_url(self.url.get_secret_value()).render_as_string(hide_password=True)


class MetricsSettings(_Section):
    """The Prometheus exporter's listen address; an empty string disables it."""

    listen: str = "127.0.0.1:9477"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected 'HOST:PORT' (e.g. '127.0.0.1:9477'), or '' to disable")
        return value

    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when disabled."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class LogSettings(_Section):
    """Log verbosity and format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class _ServiceSettings(_Section):
    enabled: bool = True
    jid: str
    secret: SecretStr
    # This service's component listener, when it is not server.port: ejabberd routes
    # every host of a listener to each component on it, so each needs its own.
    port: int | None = Field(default=None, ge=1, le=65535)
    # The domains whose users the service is for; default: the parent domain of jid.
    local_domains: list[str] = Field(default_factory=list)
    # Bytes: larger stanzas get <not-acceptable/>, unread. 256 KiB is what Prosody
    # accepts from a client, so nothing a local client may send is refused here.
    max_stanza_bytes: int = Field(default=262_144, ge=1024, le=16 * 1024 * 1024)

    @field_validator("jid")
    @classmethod
    def _jid(cls, value: str) -> str:
        return _check_jid(value)

    @field_validator("local_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [_check_jid(d) for d in value]

    @model_validator(mode="after")
    def _default_domains(self) -> _ServiceSettings:
        if not self.local_domains:
            parent = self.jid.partition(".")[2]
            self.local_domains = [parent or self.jid]
        return self


class MulticastSettings(_ServiceSettings):
    """The XEP-0033 multicast service."""

    jid: str = "multicast.example.org"
    secret: SecretStr = SecretStr("change-me")
    max_recipients: int = Field(default=50, ge=1)
    # <address/> elements of any type, and the header's serialized size: every copy
    # repeats the header, so delivered/replyto entries cost as much as recipients.
    max_addresses: int = Field(default=200, ge=1, le=100_000)
    max_header_bytes: int = Field(default=32_768, ge=256, le=16 * 1024 * 1024)
    sender_mode: Literal["auto", "trusted", "privileged"] = "auto"
    remote_disco_ttl: int = Field(default=86400, ge=0, le=86400)
    rate_limit: float = Field(default=60.0, ge=0)
    rate_burst: int = Field(default=20, ge=1)
    # Senders outside local_domains share one bucket per domain: they can mint JIDs.
    remote_domain_rate_limit: float = Field(default=120.0, ge=0)
    remote_domain_rate_burst: int = Field(default=40, ge=1)


class PubsubSettings(_ServiceSettings):
    """The caching pubsub proxy."""

    jid: str = "pubsub.example.org"
    secret: SecretStr = SecretStr("change-me")
    upstream: str = "pubsub-origin.example.org"
    max_items_per_node: int = Field(default=5000, ge=1)
    node_idle_timeout: int = Field(default=7 * 86400, ge=60)
    upstream_timeout: float = Field(default=10.0, gt=0, le=120)
    # Seconds: a cached node whose upstream does not promise notifications (XEP-0460
    # always-notify) is compared with upstream at least this often while it is read.
    reconcile_interval: float = Field(default=60.0, gt=0, le=86400)
    # What upstream may make Herald hold: a node with an item over max_item_bytes is
    # served from upstream, not cached; a service's nodes past max_nodes_per_service
    # are passed through; hot items held in memory stay under memory_cache_bytes.
    max_item_bytes: int = Field(default=65_536, ge=1024, le=64 * 1024 * 1024)
    max_nodes_per_service: int = Field(default=1_000, ge=1, le=10_000)
    memory_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    rules: list[AnalyserRule] = Field(default_factory=list)
    # Presence-based delivery (XEP-0060 pubsub#presence_based_delivery) for the
    # subscriptions Herald holds: "node" where the node's metadata says so, or for
    # every node ("always") or none ("never").
    presence_based_delivery: Literal["node", "always", "never"] = "node"
    # Bare JIDs that may run the XEP-0050 cache commands (stats, resync, purge).
    admins: list[str] = Field(default_factory=list)

    @field_validator("admins")
    @classmethod
    def _admins(cls, value: list[str]) -> list[str]:
        return [_check_bare_jid(a) for a in value]

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        return _check_jid(value)

    @model_validator(mode="after")
    def _known_parsers(self) -> PubsubSettings:
        # Resolving the rules checks parser names against built-ins and plugins, so a
        # typo fails check-config rather than the first sync.
        Registry.from_config(self.rules)
        return self


class _TomlSource(PydanticBaseSettingsSource):
    """Feeds the parsed TOML file to pydantic-settings, below the environment."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


class Settings(BaseSettings):
    """Every setting Herald reads, one attribute per TOML section."""

    model_config = SettingsConfigDict(
        env_prefix="HERALD_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    multicast: MulticastSettings = Field(default_factory=MulticastSettings)
    pubsub: PubsubSettings = Field(default_factory=PubsubSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init_settings carries the TOML data (see load_settings); env overrides it.
        return (env_settings, init_settings)

    def enabled_services(self) -> list[str]:
        """Names of the services that should connect, in a stable order."""
        return [
            name
            for name, svc in (("multicast", self.multicast), ("pubsub", self.pubsub))
            if svc.enabled
        ]


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(file)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    got = error.get("input")
    if error["type"] in ("extra_forbidden", "missing") or isinstance(got, dict | list):
        return f"{where}: {message}"
    if "secret" in where or "url" in where:
        got = MASK
    return f"{where}: {message} (got {got!r})"


def load_settings(path: Path | str) -> Settings:
    """Read and validate the TOML file, applying environment overrides.

    Raises ConfigError with one line per problem, each naming the key.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors()]
        raise ConfigError(f"{path}: invalid configuration:\n  " + "\n  ".join(lines)) from None


def masked_view(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret masked."""
    data: dict[str, Any] = json.loads(settings.model_dump_json())
    data["database"]["url"] = settings.database.masked()
    for service in ("multicast", "pubsub"):
        data[service]["secret"] = MASK
    return data
