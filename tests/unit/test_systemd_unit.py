"""systemd/herald.service: the settings the issue asks for, only directives systemd knows,
and, where systemd is installed, `systemd-analyze verify` and `security` on it.

The static lint runs everywhere. The systemd-analyze checks need the `systemd` package
(Debian), which tests/bootstrap.sh installs (it is never booted); without it they are
skipped, with the reason, and the lint alone stands. Under CI they fail instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from component import cli
from component.config import load_settings
from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "herald.service"
EXAMPLE_CONFIG = ROOT / "config" / "herald.example.toml"
EXEC_START = "/opt/herald/bin/herald run -c /etc/herald/herald.toml"


# -- a small parser for systemd.syntax(7) ------------------------------------------


@dataclass(frozen=True)
class Directive:
    section: str
    key: str
    value: str
    line: int


def parse_unit(text: str) -> list[Directive]:
    """Sections, Key=Value lines, '#'/';' comments and backslash continuations."""
    directives: list[Directive] = []
    section: str | None = None
    pending = ""
    pending_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if pending and line and line[0] in "#;":
            continue  # comments inside a continuation are skipped
        if line.endswith("\\"):
            if not pending:
                pending_line = number
            pending += line[:-1] + " "
            continue
        if pending:
            line, pending = pending + line, ""
            number = pending_line
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"line {number}: malformed section header {line!r}")
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {number}: not Key=Value: {line!r}")
        if section is None:
            raise ValueError(f"line {number}: {key.strip()} outside any section")
        directives.append(Directive(section, key.strip(), value.strip(), number))
    if pending:
        raise ValueError("file ends inside a line continuation")
    return directives


def section_names(text: str) -> list[str]:
    return [line.strip()[1:-1] for line in text.splitlines() if line.strip().startswith("[")]


def values(directives: list[Directive], section: str, key: str) -> list[str]:
    """The effective values of a list-type setting: an empty assignment resets the list."""
    result: list[str] = []
    for d in directives:
        if (d.section, d.key) == (section, key):
            result = [] if d.value == "" else [*result, d.value]
    return result


def value(directives: list[Directive], section: str, key: str) -> str | None:
    """The effective value of a single-valued setting: the last assignment wins."""
    found = [d.value for d in directives if (d.section, d.key) == (section, key)]
    return found[-1] if found else None


def is_true(text: str | None) -> bool:
    return text is not None and text.lower() in ("1", "yes", "true", "on")


_SPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0}
_SPAN_UNITS |= {"h": 3600.0, "hr": 3600.0}


def seconds(span: str) -> float:
    """A systemd time span ("5s", "1min 30s", "90") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    if not parts or re.sub(r"[\d.\sa-z]", "", span):
        raise ValueError(f"not a time span: {span!r}")
    return sum(float(n) * _SPAN_UNITS[u] for n, u in parts)


# -- the directives a service unit may use -----------------------------------------
# Kept by hand from systemd.unit(5), systemd.service(5), systemd.exec(5),
# systemd.kill(5) and systemd.resource-control(5), as of systemd 252 (Debian 12).
# Where systemd is installed, test_known_directives_are_real checks this list
# against `systemd --dump-configuration-items`, so a typo here cannot hide one there.

KNOWN_DIRECTIVES: dict[str, frozenset[str]] = {
    "Unit": frozenset(
        {
            "Description",
            "Documentation",
            "Wants",
            "Requires",
            "Requisite",
            "BindsTo",
            "PartOf",
            "Upholds",
            "Conflicts",
            "Before",
            "After",
            "OnFailure",
            "OnSuccess",
            "PropagatesReloadTo",
            "ReloadPropagatedFrom",
            "JoinsNamespaceOf",
            "RequiresMountsFor",
            "DefaultDependencies",
            "StopWhenUnneeded",
            "RefuseManualStart",
            "RefuseManualStop",
            "AllowIsolate",
            "IgnoreOnIsolate",
            "CollectMode",
            "JobTimeoutSec",
            "JobTimeoutAction",
            "StartLimitIntervalSec",
            "StartLimitBurst",
            "StartLimitAction",
            "FailureAction",
            "SuccessAction",
            "RebootArgument",
            "SourcePath",
            "ConditionPathExists",
            "ConditionPathIsDirectory",
            "ConditionFileNotEmpty",
            "ConditionHost",
            "ConditionVirtualization",
            "AssertPathExists",
        }
    ),
    "Service": frozenset(
        {
            "Type",
            "ExitType",
            "RemainAfterExit",
            "GuessMainPID",
            "PIDFile",
            "BusName",
            "ExecStart",
            "ExecStartPre",
            "ExecStartPost",
            "ExecCondition",
            "ExecReload",
            "ExecStop",
            "ExecStopPost",
            "RestartSec",
            "TimeoutStartSec",
            "TimeoutStopSec",
            "TimeoutAbortSec",
            "TimeoutSec",
            "RuntimeMaxSec",
            "WatchdogSec",
            "Restart",
            "RestartPreventExitStatus",
            "RestartForceExitStatus",
            "SuccessExitStatus",
            "RootDirectoryStartOnly",
            "NonBlocking",
            "NotifyAccess",
            "Sockets",
            "FileDescriptorStoreMax",
            "OOMPolicy",
            "WorkingDirectory",
            "RootDirectory",
            "RootImage",
            "User",
            "Group",
            "DynamicUser",
            "SupplementaryGroups",
            "PAMName",
            "UMask",
            "Environment",
            "EnvironmentFile",
            "PassEnvironment",
            "UnsetEnvironment",
            "StandardInput",
            "StandardOutput",
            "StandardError",
            "SyslogIdentifier",
            "SyslogFacility",
            "SyslogLevel",
            "LogLevelMax",
            "LogExtraFields",
            "LogRateLimitIntervalSec",
            "LogRateLimitBurst",
            "LogNamespace",
            "Nice",
            "OOMScoreAdjust",
            "CPUSchedulingPolicy",
            "IOSchedulingClass",
            "LimitNOFILE",
            "LimitNPROC",
            "LimitCORE",
            "LimitMEMLOCK",
            "LimitAS",
            "ProtectSystem",
            "ProtectHome",
            "RuntimeDirectory",
            "RuntimeDirectoryMode",
            "RuntimeDirectoryPreserve",
            "StateDirectory",
            "StateDirectoryMode",
            "CacheDirectory",
            "CacheDirectoryMode",
            "LogsDirectory",
            "LogsDirectoryMode",
            "ConfigurationDirectory",
            "ConfigurationDirectoryMode",
            "TimeoutCleanSec",
            "ReadWritePaths",
            "ReadOnlyPaths",
            "InaccessiblePaths",
            "ExecPaths",
            "NoExecPaths",
            "TemporaryFileSystem",
            "BindPaths",
            "BindReadOnlyPaths",
            "PrivateTmp",
            "PrivateDevices",
            "PrivateNetwork",
            "NetworkNamespacePath",
            "PrivateIPC",
            "IPCNamespacePath",
            "PrivateUsers",
            "PrivateMounts",
            "MountFlags",
            "ProtectHostname",
            "ProtectClock",
            "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectControlGroups",
            "ProtectProc",
            "ProcSubset",
            "RestrictAddressFamilies",
            "RestrictFileSystems",
            "RestrictNamespaces",
            "LockPersonality",
            "MemoryDenyWriteExecute",
            "RestrictRealtime",
            "RestrictSUIDSGID",
            "RemoveIPC",
            "SystemCallFilter",
            "SystemCallErrorNumber",
            "SystemCallArchitectures",
            "SystemCallLog",
            "NoNewPrivileges",
            "CapabilityBoundingSet",
            "AmbientCapabilities",
            "SecureBits",
            "KeyringMode",
            "LoadCredential",
            "LoadCredentialEncrypted",
            "SetCredential",
            "SetCredentialEncrypted",
            "CPUQuota",
            "CPUWeight",
            "MemoryMax",
            "MemoryHigh",
            "MemoryLow",
            "MemoryMin",
            "MemorySwapMax",
            "TasksMax",
            "IOWeight",
            "IPAddressAllow",
            "IPAddressDeny",
            "IPAccounting",
            "DeviceAllow",
            "DevicePolicy",
            "Slice",
            "Delegate",
            "ManagedOOMSwap",
            "ManagedOOMMemoryPressure",
            "KillMode",
            "KillSignal",
            "RestartKillSignal",
            "SendSIGHUP",
            "SendSIGKILL",
            "FinalKillSignal",
            "WatchdogSignal",
        }
    ),
    "Install": frozenset({"WantedBy", "RequiredBy", "Alias", "Also", "DefaultInstance"}),
}

# What the issue asks for, as (section, key) -> the effective value.
REQUIRED_VALUES: dict[tuple[str, str], str] = {
    ("Service", "Type"): "notify",
    ("Service", "ExecStart"): EXEC_START,
    ("Service", "StateDirectory"): "herald",
    ("Service", "WorkingDirectory"): "/var/lib/herald",
    ("Service", "Restart"): "on-failure",
    ("Service", "EnvironmentFile"): "-/etc/herald/herald.env",
    ("Service", "ProtectSystem"): "strict",
    ("Service", "SystemCallArchitectures"): "native",
    ("Service", "UMask"): "0077",
    ("Install", "WantedBy"): "multi-user.target",
}
REQUIRED_TRUE: tuple[str, ...] = (
    "DynamicUser",
    "ProtectHome",
    "NoNewPrivileges",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
)


def lint(text: str) -> list[str]:
    """Problems with a unit file, one line each; [] when it is fine."""
    problems: list[str] = []
    names = section_names(text)
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"[{name}] appears more than once")
    try:
        directives = parse_unit(text)
    except ValueError as exc:
        return [*problems, str(exc)]
    for name in names:
        if name not in KNOWN_DIRECTIVES:
            problems.append(f"[{name}]: not a section of a service unit")
    for d in directives:
        known = KNOWN_DIRECTIVES.get(d.section, frozenset())
        if d.section in KNOWN_DIRECTIVES and d.key not in known:
            problems.append(f"line {d.line}: unknown directive {d.key}= in [{d.section}]")
    for (section, key), expected in REQUIRED_VALUES.items():
        got = value(directives, section, key)
        if got != expected:
            problems.append(f"[{section}] {key}={got!r}, expected {expected!r}")
    for key in REQUIRED_TRUE:
        if not is_true(value(directives, "Service", key)):
            problems.append(f"[Service] {key}= must be yes")
    families = " ".join(values(directives, "Service", "RestrictAddressFamilies")).split()
    if sorted(families) != ["AF_INET", "AF_INET6", "AF_UNIX"]:
        problems.append(
            f"RestrictAddressFamilies= is {families}, expected AF_INET AF_INET6 AF_UNIX"
        )
    filters = values(directives, "Service", "SystemCallFilter")
    if not filters or filters[0].split() != ["@system-service"]:
        problems.append(f"SystemCallFilter= must start with @system-service, got {filters}")
    capability_lines = [d for d in directives if d.key == "CapabilityBoundingSet"]
    if not capability_lines or values(directives, "Service", "CapabilityBoundingSet"):
        problems.append("CapabilityBoundingSet= must be set, and empty")
    if value(directives, "Service", "User") is not None:
        problems.append("User= conflicts with DynamicUser=yes")
    for key in ("RestartSec", "TimeoutStopSec"):
        span = value(directives, "Service", key)
        if span is None:
            problems.append(f"[Service] {key}= missing")
    return problems


# -- the tests -----------------------------------------------------------------------


def unit_text() -> str:
    return UNIT.read_text(encoding="utf-8")


def test_unit_has_what_the_issue_asks_for_and_only_known_directives() -> None:
    assert lint(unit_text()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("ProtectHome=yes\n", "ProtecHome=yes\n"), "unknown directive ProtecHome="),
        (("Type=notify\n", "Type=simple\n"), "Type='simple', expected 'notify'"),
        (("[Install]\n", "[Instal]\n"), "[Instal]: not a section"),
        (
            ("RestrictAddressFamilies=AF_INET", "RestrictAddressFamilies=AF_NETLINK AF_INET"),
            "RestrictAddressFamilies=",
        ),
        (("CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"), "empty"),
        (("MemoryDenyWriteExecute=yes\n", "MemoryDenyWriteExecute=no\n"), "MemoryDenyWrite"),
        (("UMask=0077\n", "UMask=0022\n"), "UMask='0022'"),
    ],
)
def test_lint_catches_a_broken_unit(change: tuple[str, str], problem: str) -> None:
    text = unit_text()
    old, new = change
    assert old in text
    problems = lint(text.replace(old, new, 1))
    assert problems, f"lint accepted the unit with {new.strip()!r}"
    assert any(problem in p for p in problems), problems


def test_parser_handles_systemd_syntax() -> None:
    text = "[Unit]\n# c\n; c\nDescription=a \\\n  b\n[Service]\nEnvironment=A=1\nExecStart=x\n"
    assert parse_unit(text) == [
        Directive("Unit", "Description", "a  b", 4),
        Directive("Service", "Environment", "A=1", 7),
        Directive("Service", "ExecStart", "x", 8),
    ]
    with pytest.raises(ValueError, match="outside any section"):
        parse_unit("Type=notify\n")
    with pytest.raises(ValueError, match="not Key=Value"):
        parse_unit("[Service]\nnonsense\n")


def test_timeouts_leave_room_for_a_clean_shutdown() -> None:
    directives = parse_unit(unit_text())
    restart = value(directives, "Service", "RestartSec")
    stop = value(directives, "Service", "TimeoutStopSec")
    assert restart is not None
    assert stop is not None
    assert seconds(restart) >= 1, "restarting in a tight loop hammers the XMPP server"
    # component.app.serve gives herald.stop() 4 s; systemd must not SIGKILL before that.
    assert seconds(stop) >= 10
    assert seconds("1min 30s") == 90


def test_a_configuration_error_is_not_restarted() -> None:
    # herald exits 2 on a bad configuration; restarting cannot fix the file.
    prevented = " ".join(values(parse_unit(unit_text()), "Service", "RestartPreventExitStatus"))
    assert str(cli.EXIT_CONFIG) in prevented.split()


def test_exec_start_is_a_real_herald_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The arguments after the binary parse as `herald run -c FILE` (argparse would exit)."""
    program, *args = EXEC_START.split()
    assert Path(program).name == "herald"
    config_index = args.index("-c") + 1
    args[config_index] = str(tmp_path / "missing.toml")
    assert cli.main(args) == cli.EXIT_CONFIG  # reached the config loader: arguments are valid
    assert "no such file" in capsys.readouterr().err


def test_default_database_lands_in_the_working_directory() -> None:
    # The example config's SQLite path is relative, so under the unit it is
    # WorkingDirectory=/var/lib/herald, the StateDirectory, the one writable place.
    settings = load_settings(EXAMPLE_CONFIG)
    url = make_url(settings.database.url.get_secret_value())
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database is not None
    assert not Path(url.database).is_absolute()
    directives = parse_unit(unit_text())
    state = value(directives, "Service", "StateDirectory")
    assert value(directives, "Service", "WorkingDirectory") == f"/var/lib/{state}"


def test_process_metrics_stay_visible() -> None:
    # ProcSubset=pid hides /proc/stat; prometheus_client then silently drops every
    # process_* metric, which the dashboard and alerts use.
    assert value(parse_unit(unit_text()), "Service", "ProcSubset") in (None, "all")


# -- with systemd installed ----------------------------------------------------------


def systemd_binary() -> Path | None:
    for candidate in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def systemd_directives() -> dict[str, set[str]]:
    """Every directive this machine's systemd knows, by section."""
    binary = systemd_binary()
    if binary is None:
        missing("systemd (Debian package: systemd; tests/bootstrap.sh installs it)")
    dump = subprocess.run(
        [str(binary), "--dump-configuration-items"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    known: dict[str, set[str]] = {}
    section = ""
    for line in dump.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line:
            known.setdefault(section, set()).add(line.partition("=")[0])
    return known


def test_known_directives_are_real() -> None:
    known = systemd_directives()
    unknown = {
        section: sorted(names - known.get(section, set()))
        for section, names in KNOWN_DIRECTIVES.items()
        if names - known.get(section, set())
    }
    assert unknown == {}, "not directives of this systemd (typo in KNOWN_DIRECTIVES?)"


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        missing("systemd-analyze (Debian package: systemd; tests/bootstrap.sh installs it)")
    return path


def verifiable_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart's binary replaced by one that exists here, as verify checks."""
    herald = Path(sys.executable).with_name("herald")
    binary = herald if herald.exists() else Path(sys.executable)
    program = EXEC_START.split()[0]
    assert program in text
    copy = tmp_path / "herald.service"
    copy.write_text(text.replace(program, str(binary)), encoding="utf-8")
    return copy


def verify(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    """systemd-analyze verify: its exit code and the lines it printed about our unit.

    It exits 0 even for an unknown directive (it only warns and ignores it), so the
    printed diagnostics matter as much as the exit code.
    """
    tool = analyze()
    copy = verifiable_copy(tmp_path, text)
    helptext = subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=30).stdout
    command = [tool, "verify", "--man=no"]
    if "--recursive-errors" in helptext:
        command.append("--recursive-errors=no")  # only this unit, not the whole system
    done = subprocess.run(
        [*command, str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    output = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in output if "herald" in line]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    returncode, diagnostics = verify(tmp_path, unit_text())
    assert diagnostics == []
    assert returncode == 0


def test_systemd_analyze_verify_notices_a_broken_unit(tmp_path: Path) -> None:
    broken = unit_text().replace("ProtectHome=yes\n", "ProtecHome=yes\nRestartSec=soon\n")
    returncode, diagnostics = verify(tmp_path, broken)
    text = "\n".join(diagnostics)
    assert "ProtecHome" in text
    assert "soon" in text or returncode != 0


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    tool = analyze()
    helptext = subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=30).stdout
    if "--offline" not in helptext:
        pytest.skip("this systemd-analyze cannot review a unit file offline (needs systemd 250)")
    copy = verifiable_copy(tmp_path, unit_text())
    done = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for herald\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout[-2000:]
    # 0 is fully locked down, 10 is unprotected. What is left is inherent to a network
    # service: it must open sockets and live in the host's network namespace.
    assert float(match.group(1)) <= 1.5, done.stdout
