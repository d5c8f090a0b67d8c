"""`make demo`: a throwaway Prosody and Herald on embedded SQLite, a short tour, then
Herald serves until Ctrl-C.

Set up as the README recommends: Herald is no admin of the upstream pubsub service; it
holds the XEP-0356 privileges of config/prosody.cfg.lua. Prosody offers STARTTLS with
a self-signed certificate. Everything lives in .demo/ (deleted and recreated each run).

    python -m tests.harness.demo [--no-tour | --tour-only]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.client import TestClient
from tests.harness.ports import free_port
from tests.harness.prosody import ComponentSpec, Prosody

ROOT = Path(__file__).resolve().parents[2] / ".demo"  # the default --root
USERS = {"alice": "alice", "bob": "bob", "carol": "carol"}
MULTICAST, PROXY, UPSTREAM = "multicast.localhost", "pubsub.localhost", "pubsub-origin.localhost"
NODE = "urn:xmpp:microblog:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
ATOM = "http://www.w3.org/2005/Atom"
ADDRESS = "http://jabber.org/protocol/address"

CONFIG = """\
[server]
host = "127.0.0.1"
port = {component_port}

[database]
url = "sqlite+aiosqlite:///{root}/herald.db"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[multicast]
jid = "{multicast}"
secret = "demo-multicast"
local_domains = ["localhost"]
sender_mode = "auto"

[pubsub]
jid = "{proxy}"
secret = "demo-pubsub"
upstream = "{upstream}"

[[pubsub.rules]]
node = "urn:xmpp:microblog:0*"
sync = true
parser = "atom"
"""

# What config/prosody.cfg.lua grants, for the demo's domain.
PRIVILEGES = [
    "privileged_entities = {",
    f'  ["{PROXY}"] = {{ iq = {{',
    '    ["http://jabber.org/protocol/pubsub"] = "both";',
    '    ["http://jabber.org/protocol/pubsub#owner"] = "both";',
    '    ["http://jabber.org/protocol/disco#items"] = "get";',
    "  } };",
    f'  ["{MULTICAST}"] = {{ presence = "managed_entity" }};',
    "}",
]


class TourFailed(RuntimeError):
    """A step of the tour did not do what it should."""


def make_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for localhost with openssl; None if openssl is missing."""
    cert, key = directory / "localhost.crt", directory / "localhost.key"
    directory.mkdir(parents=True, exist_ok=True)
    if shutil.which("openssl") is None:
        return None  # no new dependency for this: the demo then runs without TLS
    san = "subjectAltName=DNS:localhost,DNS:*.localhost,IP:127.0.0.1"
    command = (
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost -addext {san}"
    )
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def fingerprint(cert: Path) -> str:
    """The certificate's SHA-256 fingerprint, to compare with what a client shows."""
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.strip().partition("=")[2]


class Metrics:
    """Herald's /metrics, read over HTTP as an operator would."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    def snapshot(self) -> dict[str, float]:
        """Every sample as 'name{k=v,...}' -> value."""
        _, text = self.get("/metrics")
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
        return samples


def moved(before: dict[str, float], after: dict[str, float], *prefixes: str) -> list[str]:
    """The samples under prefixes that changed, as 'name{...} +N' lines."""
    lines = []
    for name, value in sorted(after.items()):
        if name.startswith(prefixes) and value != before.get(name, 0.0):
            lines.append(f"{name} {value - before.get(name, 0.0):+g}")
    return lines


def entry(title: str, text: str) -> ET.Element:
    element = ET.Element(f"{{{ATOM}}}entry")
    ET.SubElement(element, f"{{{ATOM}}}title").text = title
    ET.SubElement(element, f"{{{ATOM}}}content").text = text
    return element


async def read_items(client: TestClient) -> list[str]:
    """The titles bob gets for the node, asking the proxy."""
    reply = await client.plugin["xep_0060"].get_items(PROXY, NODE, timeout=10)
    return [t.text or "" for t in reply.xml.iter(f"{{{ATOM}}}title")]


async def counted_read(
    client: TestClient, metrics: Metrics, result: str
) -> tuple[list[str], float, dict[str, float], dict[str, float]]:
    """read_items(), and how much it moved the items requests counted as `result`
    (with the metrics before and after)."""
    key = f"herald_pubsub_requests_total{{kind=items,result={result}}}"
    before = metrics.snapshot()
    got = await read_items(client)
    after = metrics.snapshot()
    return got, after.get(key, 0) - before.get(key, 0), before, after


async def tour(prosody: Prosody, metrics: Metrics, tls: tuple[Path, Path] | None) -> None:
    """Alice blogs through the proxy, bob reads it twice, alice multicasts to bob and carol."""
    say = print
    plugins = ("xep_0030", "xep_0004", "xep_0060")
    users = {name: TestClient(f"{name}@localhost/tour", pw, plugins) for name, pw in USERS.items()}
    if tls:
        # bob logs in as a real client would: STARTTLS, the certificate verified
        # against the demo's own (self-signed) one; he then uses both services over it.
        bob = users["bob"]
        bob.enable_starttls, bob.enable_plaintext = True, False
        bob.ssl_context.load_verify_locations(cafile=str(tls[0]))
    for client in users.values():
        await client.start(prosody.c2s_port)
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    step = 0

    def title(text: str) -> None:
        nonlocal step
        step += 1
        say(f"\n{step}. {text}")

    try:
        say("Tour: alice, bob and carol use both services (skip it with --no-tour).")
        if tls:
            cipher = bob.socket.cipher() if hasattr(bob.socket, "cipher") else None
            version = cipher[1] if cipher else "TLS"
            say(f"   bob logged in over STARTTLS ({version}, the demo certificate verified).")

        title(f"alice creates the node {NODE} upstream, at {UPSTREAM}.")
        form = alice.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#node_config")
        form.add_field(var="pubsub#access_model", value="open")
        form.add_field(var="pubsub#max_items", value="100")
        await alice.plugin["xep_0060"].create_node(UPSTREAM, NODE, config=form, timeout=10)
        say("   She may: she is an admin of that pubsub service. Herald is not.")

        title(f"alice publishes 3 Atom entries through the proxy, {PROXY}.")
        before = metrics.snapshot()
        posts = ["Hello from Herald", "Caching pubsub", "Multicast too"]
        for n, text in enumerate(posts, 1):
            payload = entry(text, f"Post {n} of the demo tour.")
            await alice.plugin["xep_0060"].publish(
                PROXY, NODE, id=f"post-{n}", payload=payload, timeout=10
            )
        upstream = await alice.plugin["xep_0060"].get_items(UPSTREAM, NODE, timeout=10)
        if len(upstream["pubsub"]["items"]) != len(posts):
            raise TourFailed("the entries did not arrive upstream")
        say(
            "   Herald may not publish there itself: it forwarded each write upstream as alice\n"
            f"   (a XEP-0356 privileged IQ), and upstream now holds the {len(posts)} entries."
        )

        title("bob reads the node through the proxy: a cache miss.")
        got, miss, before, after = await counted_read(bob, metrics, "miss")
        if got != posts or miss != 1:
            raise TourFailed(f"first read: got {got}, misses {miss:+g} (expected 1 miss)")
        say(
            f"   bob got {len(got)} entries: {', '.join(repr(t) for t in got)}.\n"
            "   Herald had no copy, so it asked upstream (a MISS), and, since the node is open\n"
            "   and matches the sync rule urn:xmpp:microblog:0*, it began to cache it."
        )
        for line in moved(
            before, after, "herald_pubsub_requests_total", "herald_pubsub_upstream_requests"
        ):
            say(f"     {line}")

        # The copy is in use once its sync has completed (the gauge is set last).
        started = time.monotonic()
        while after.get("herald_pubsub_cached_nodes{sync_state=completed}", 0) < 1:
            if time.monotonic() - started > 15:
                raise TourFailed("the node was not synced within 15 s")
            await asyncio.sleep(0.1)
            after = metrics.snapshot()
        synced = time.monotonic() - started
        items = after.get("herald_pubsub_cached_items", 0)

        title("bob reads it again: a cache hit.")
        got, hit, before, after = await counted_read(bob, metrics, "hit")
        if got != posts or hit != 1:
            raise TourFailed(f"second read: got {got}, hits {hit:+g} (expected 1 hit)")
        say(
            f"   Herald synced the node within {synced:.1f} s ({items:g} items cached, and it\n"
            "   subscribed upstream to stay in sync), so it answered bob from its own database\n"
            "   (a HIT), without asking upstream."
        )
        for line in moved(
            before, after, "herald_pubsub_requests_total", "herald_pubsub_upstream_requests"
        ):
            say(f"     {line}")

        title(f"alice sends one message to {MULTICAST}, addressed to bob and carol.")
        before = metrics.snapshot()
        msg = alice.make_message(mto=MULTICAST, mbody="Lunch at noon? (one stanza, two copies)")
        header = ET.SubElement(msg.xml, f"{{{ADDRESS}}}addresses")
        for jid in ("bob@localhost", "carol@localhost"):
            ET.SubElement(header, f"{{{ADDRESS}}}address", {"type": "to", "jid": jid})
        msg.send()
        for name, client in (("bob", bob), ("carol", carol)):
            try:
                copy = await asyncio.wait_for(client.messages.get(), 10)
            except TimeoutError:
                raise TourFailed(f"{name} received no copy") from None
            if copy["type"] == "error" or copy["from"].bare != "alice@localhost":
                raise TourFailed(f"{name} received {copy}")
        after = metrics.snapshot()
        fanned = after.get("herald_multicast_recipients_total{route=local}", 0) - before.get(
            "herald_multicast_recipients_total{route=local}", 0
        )
        if fanned != 2:
            raise TourFailed(f"expected 2 local copies, metrics say {fanned:+g}")
        say(
            "   Herald fanned it out: 2 copies, one to bob and one to carol, each from\n"
            "   alice@localhost (sent as alice: Prosody trusts the multicast component,\n"
            "   validate_from_addresses = false; sender_mode = auto)."
        )
        for line in moved(before, after, "herald_multicast_"):
            say(f"     {line}")
        say("\nTour OK: 1 miss, 1 hit, 1 message fanned out to 2 recipients.")
    finally:
        for client in users.values():
            await client.stop()


async def wait_healthy(metrics: Metrics, herald: subprocess.Popen[bytes], log: Path) -> None:
    """Until /healthz says ok, then a moment for Prosody's privilege advertisement."""
    deadline = time.monotonic() + 30
    while metrics.get("/healthz")[0] != 200:
        if herald.poll() is not None or time.monotonic() > deadline:
            raise TourFailed(f"Herald did not become healthy; see {log}")
        await asyncio.sleep(0.1)
    # mod_privilege advertises the grants right after each handshake; a write that
    # came first would be refused (nothing outside Herald shows they have arrived)
    await asyncio.sleep(0.5)


def banner(root: Path, prosody: Prosody, metrics_port: int, tls: tuple[Path, Path] | None) -> str:
    port = prosody.c2s_port
    if tls:
        connect = f"""\
  XMPP clients: 127.0.0.1 port {prosody.c2s_port}, STARTTLS with a self-signed certificate
                (plaintext still accepted). Accounts: alice@localhost / alice,
                bob@localhost / bob, carol@localhost / carol
  TLS cert:     {tls[0]}
                SHA-256 {fingerprint(tls[0])}
  Gajim:        Add account > Sign in, alice@localhost / alice; Advanced: custom host
                127.0.0.1, port {prosody.c2s_port}; when asked, accept the certificate.
  Dino:         has no host/port setting and tries localhost:5222, so start the demo
                with `make demo DEMO_ARGS=--c2s-port=5222`; accept the certificate.
  Command line: go-sendxmpp (apt-get install go-sendxmpp; -n accepts the certificate).
                bob listens:  go-sendxmpp -u bob@localhost -p bob -j 127.0.0.1:{port} -n -l
                alice sends one message to bob and carol through the multicast service:
                  echo "<message to='{MULTICAST}'><body>hi</body><addresses xmlns='{ADDRESS}'>\\
                    <address type='to' jid='bob@localhost'/>\\
                    <address type='to' jid='carol@localhost'/></addresses></message>" |\\
                   go-sendxmpp -u alice@localhost -p alice -j 127.0.0.1:{port} -n --raw"""
    else:
        connect = f"""\
  XMPP clients: 127.0.0.1 port {prosody.c2s_port}, plaintext only (openssl is missing,
                so no certificate). Accounts: alice/alice, bob/bob, carol/carol @localhost"""
    return f"""
Herald demo
{connect}
  multicast:    {MULTICAST}   pubsub proxy: {PROXY}
                (proxying Prosody's own pubsub at {UPSTREAM}, node {NODE})
  metrics:      http://127.0.0.1:{metrics_port}/metrics
  health:       http://127.0.0.1:{metrics_port}/healthz
  files:        {root}  (herald.toml, herald.db, herald.log, prosody/prosody.log)"""


def main(argv: list[str] | None = None) -> int:
    """Start Prosody and Herald, run the tour, then serve until Ctrl-C (or exit)."""
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--no-tour", action="store_true", help="skip the tour")
    parser.add_argument(
        "--tour-only", action="store_true", help="run the tour and exit (0 if it worked)"
    )
    parser.add_argument(
        "--c2s-port", type=int, default=0, help="client port (default: any free one)"
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help=f"working directory, wiped first ({ROOT})"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if (
        root != ROOT
        and root.is_dir()
        and any(root.iterdir())
        and not (root / "herald.toml").exists()
    ):
        parser.error(f"{root} is not empty and holds no demo: it would be wiped")
    # SIGTERM (a test's timeout, systemd, kill) stops the servers as Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    tls = make_certificate(root / "prosody" / "certs")
    prosody = Prosody(
        root=root / "prosody",
        components=[
            # as config/prosody.cfg.lua: both may use mod_privilege; multicast sends
            # as users in trusted mode only (never also with the message privilege)
            ComponentSpec(
                MULTICAST,
                "demo-multicast",
                ['modules_enabled = { "privilege" }', "validate_from_addresses = false"],
            ),
            ComponentSpec(PROXY, "demo-pubsub", ['modules_enabled = { "privilege" }']),
        ],
        users=USERS,
        host_options=PRIVILEGES,
        pubsub_component=UPSTREAM,
        pubsub_admins=["alice@localhost"],  # a user creates nodes; Herald is no admin
        tls=tls,
    )
    if args.c2s_port:
        prosody.c2s_port = args.c2s_port
    prosody.start()
    metrics_port = free_port()
    config = root / "herald.toml"
    config.write_text(
        CONFIG.format(
            component_port=prosody.component_port,
            root=root,
            metrics_port=metrics_port,
            multicast=MULTICAST,
            proxy=PROXY,
            upstream=UPSTREAM,
        )
    )
    print(banner(root, prosody, metrics_port, tls), flush=True)
    log = root / "herald.log"
    with log.open("wb") as out:
        herald = subprocess.Popen(
            [sys.executable, "-m", "component.cli", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    status = 0
    try:
        metrics = Metrics(metrics_port)
        asyncio.run(wait_healthy(metrics, herald, log))
        if not args.no_tour:
            try:
                asyncio.run(tour(prosody, metrics, tls))
            except Exception as exc:  # any failure: say it plainly, exit non-zero
                print(f"\nTour FAILED: {exc!r}\n  see {log} and {prosody.log_path}", flush=True)
                status = 1
        if args.tour_only:
            return status
        print(
            f"\nHerald is running (log: {log}). Connect your own client; Ctrl-C stops.",
            flush=True,
        )
        return herald.wait()
    except KeyboardInterrupt:
        return 130 if args.tour_only else 0
    finally:
        if herald.poll() is None:
            herald.send_signal(signal.SIGINT)
            try:
                herald.wait(10)
            except subprocess.TimeoutExpired:
                herald.kill()
        prosody.stop()


if __name__ == "__main__":
    sys.exit(main())
