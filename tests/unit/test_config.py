"""Configuration loading, validation messages, environment overrides and masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from component.cli import main
from component.config import ConfigError, load_settings, masked_view

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "herald.example.toml"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "herald.toml"
    path.write_text(body)
    return path


def test_defaults_follow_the_contract(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""))
    assert (s.server.host, s.server.port) == ("127.0.0.1", 5347)
    assert s.database.url.get_secret_value() == "sqlite+aiosqlite:///herald.db"
    assert s.metrics.listen == "127.0.0.1:9477"
    assert s.log.level == "info"
    assert s.multicast.max_recipients == 50
    assert s.multicast.sender_mode == "auto"
    assert s.multicast.remote_disco_ttl == 86400
    assert s.multicast.local_domains == ["example.org"]  # parent of the jid
    assert s.pubsub.max_items_per_node == 5000
    assert s.pubsub.admins == []
    assert s.enabled_services() == ["multicast", "pubsub"]


def test_example_file_is_valid_and_documents_every_key() -> None:
    s = load_settings(EXAMPLE)
    text = EXAMPLE.read_text()
    for section, values in masked_view(s).items():
        assert f"[{section}]" in text
        for key, value in values.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                assert f"[[{section}.{key}]]" in text
                for sub in value[0]:
                    assert f"{sub} =" in text, f"{section}.{key}.{sub} undocumented"
                continue
            assert f"{key} =" in text or f"# {key} =" in text, f"{section}.{key} undocumented"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[multicast]\nmax_recipients = "lots"\n', "multicast.max_recipients"),
        ("[multicast]\nmax_recipients = 0\n", "multicast.max_recipients"),
        ("[server]\nport = 70000\n", "server.port"),
        ('[multicast]\nsender_mode = "maybe"\n', "multicast.sender_mode"),
        ('[multicast]\njid = "not a jid@@"\n', "multicast.jid"),
        ('[pubsub]\nupstream = "user@host/res"\n', "pubsub.upstream"),
        ("[multicast]\nremote_disco_ttl = 90000\n", "multicast.remote_disco_ttl"),
        ('[metrics]\nlisten = "9477"\n', "metrics.listen"),
        ('[database]\nurl = "mysql://x/y"\n', "database.url"),
        ("[server]\nprot = 1\n", "server.prot: unknown key"),
        ("[sever]\nport = 1\n", "sever: unknown key"),
        ('[log]\nlevel = "loud"\n', "log.level"),
        ("[[pubsub.rules]]\nsink = true\n", "pubsub.rules.0.sink"),
        ('[[pubsub.rules]]\nparser = "rss"\n', "pubsub.rules[0]: unknown pubsub parser 'rss'"),
        ('[pubsub]\nadmins = ["boss@example.org/laptop"]\n', "pubsub.admins: Value error"),
        ('[pubsub]\nadmins = ["@@"]\n', "pubsub.admins: Value error"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, body))
    assert expected in str(info.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\n"))


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_MULTICAST__MAX_RECIPIENTS", "25")
    monkeypatch.setenv("HERALD_PUBSUB__SECRET", "from-env")
    monkeypatch.setenv("HERALD_MULTICAST__LOCAL_DOMAINS", '["a.example", "b.example"]')
    s = load_settings(write(tmp_path, "[multicast]\nmax_recipients = 10\n"))
    assert s.multicast.max_recipients == 25
    assert s.pubsub.secret.get_secret_value() == "from-env"
    assert s.multicast.local_domains == ["a.example", "b.example"]


def test_bad_environment_value_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_MULTICAST__MAX_RECIPIENTS", "many")
    with pytest.raises(ConfigError, match=r"multicast\.max_recipients"):
        load_settings(write(tmp_path, ""))


SECRETS = (
    '[multicast]\nsecret = "mc-s3cret"\n[pubsub]\nsecret = "ps-s3cret"\n'
    '[database]\nurl = "postgresql+psycopg://herald:db-s3cret@db.internal/herald"\n'
)


def test_check_config_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(write(tmp_path, SECRETS))]) == 0
    out = capsys.readouterr().out
    assert "max_recipients = 50" in out
    assert "herald:***@db.internal" in out
    for secret in ("mc-s3cret", "ps-s3cret", "db-s3cret"):
        assert secret not in out


def test_check_config_bad_type_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[multicast]\nmax_recipients = "ten"\n')
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "max_recipients" in err


def test_invalid_secret_value_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[pubsub]\nsecret = ["topsecret-list"]\n')
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pubsub.secret" in err
    assert "topsecret-list" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("herald ")


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    from component import logs

    logs.configure("info", "json")
    try:
        logging.getLogger("component.test").warning("hello %s", "world")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        entry = json.loads(line)
        assert entry["message"] == "hello world"
        assert entry["level"] == "warning"
        assert entry["logger"] == "component.test"
    finally:
        logging.getLogger().handlers.clear()
