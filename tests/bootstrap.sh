#!/usr/bin/env bash
# Installs what Herald's demo and tests need on a fresh Debian machine:
#   the venv (.venv) with Herald and its dev tools; Prosody and prosody-modules;
#   ejabberd; promtool (Debian's prometheus package); systemd-analyze (Debian's
#   systemd package, installed, never booted);
#   with --postgres, a PostgreSQL the tests can use without a password: the one at
#   $HERALD_TEST_POSTGRES_URL (default postgres@127.0.0.1:5432/test) when it works,
#   else a private cluster of this checkout; its URL is written to .pgtest/url.
# Idempotent: a second run only checks.
#   bash tests/bootstrap.sh [--postgres]
#   bash tests/bootstrap.sh --stop-postgres   # stops the private cluster, if running
set -euo pipefail
cd "$(dirname "$0")/.."

need_pg=0
case "${1:-}" in
  "") ;;
  --postgres) need_pg=1 ;;
  --stop-postgres) need_pg=stop ;;
  *) echo "usage: $0 [--postgres | --stop-postgres]" >&2; exit 2 ;;
esac
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  # policy-rc.d (where present) keeps packaged services from starting; tests run their own.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- the private PostgreSQL cluster (see the PostgreSQL section below) -----------
PGTEST=$PWD/.pgtest   # url, password, home: what this checkout's bootstrap recorded

# Runs a command as the cluster's owner: postgres when we are root (initdb and the
# server refuse to run as root), else ourselves. From /, which postgres can enter.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

# The bin directory of the newest PostgreSQL installed (Debian keeps each major
# version under /usr/lib/postgresql/N/bin), or of the one on $PATH.
pg_bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then
    echo "$found"
  elif command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  fi
}

private_pg_running() {
  local home
  [ -f "$PGTEST/home" ] || return 1
  home=$(cat "$PGTEST/home")
  [ -f "$home/data/PG_VERSION" ] || return 1
  as_owner "$(pg_bindir)/pg_ctl" status -D "$home/data" >/dev/null 2>&1
}

stop_private_pg() {
  if private_pg_running; then
    echo "bootstrap: stopping the private PostgreSQL in $(cat "$PGTEST/home")" >&2
    as_owner "$(pg_bindir)/pg_ctl" stop -D "$(cat "$PGTEST/home")/data" -m fast -s
  fi
}

if [ "$need_pg" = stop ]; then
  stop_private_pg
  exit 0
fi

# --- Python --------------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.herald-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing Herald and its dev tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

# --- Prosody -------------------------------------------------------------
if ! command -v prosody >/dev/null || [ ! -f /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua ]; then
  echo "bootstrap: installing prosody and prosody-modules with apt-get"
  apt_install prosody prosody-modules
fi

# --- ejabberd --------------------------------------------------------------
if ! command -v ejabberdctl >/dev/null; then
  echo "bootstrap: installing ejabberd with apt-get"
  apt_install ejabberd
fi

# --- promtool (checks the shipped Prometheus alert rules) -------------------
if ! command -v promtool >/dev/null; then
  echo "bootstrap: installing prometheus (for promtool) with apt-get"
  apt_install --no-install-recommends prometheus
fi


# --- systemd-analyze (tests/unit/test_systemd_unit.py verifies systemd/herald.service) ---
# The package only provides the binaries here: nothing boots it, so it is harmless in a
# container. Without it those tests skip, and fail under CI.
if ! command -v systemd-analyze >/dev/null || [ ! -x /lib/systemd/systemd ]; then
  echo "bootstrap: installing systemd (for systemd-analyze; not booted) with apt-get"
  if [ "$apt_updated" = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  if ! apt-cache policy systemd | grep -q 'Candidate: [0-9]'; then
    echo "bootstrap: WARNING: no systemd package in the apt sources;" \
      "the systemd-analyze tests will skip (and fail under CI)" >&2
  elif ! apt_install --no-install-recommends systemd; then
    echo "bootstrap: WARNING: apt-get could not install systemd;" \
      "the systemd-analyze tests will skip (and fail under CI)" >&2
  fi
fi

# --- PostgreSQL ----------------------------------------------------------
# The tests need a PostgreSQL they reach without a password, as a role that may create
# databases (each test makes its own): $HERALD_TEST_POSTGRES_URL, by default
# postgres@127.0.0.1:5432/test. A server set up that way is used as it is, and its
# database is created when missing. A stock Debian server refuses: pg_hba.conf asks
# for a password (scram) over TCP. Rather than reconfigure the machine's server, the
# bootstrap then runs a private cluster for this checkout (initdb into .pgtest/cluster,
# or a folder in /tmp when the postgres user cannot enter the checkout), on a free
# loopback port, with a random password (in .pgtest/url, mode 600) so that other local
# users cannot use it. `make test` stops it after the tests (--stop-postgres); the next
# run starts it again in a fraction of a second.
# Either way the URL the tests must use is written to .pgtest/url, which the Makefile
# and tests/conftest.py read.

# Exit 0 when the URL connects, its database exists or was created here, and its role
# may create databases; else exit 1 with the reason on stdout.
pg_check() {
  .venv/bin/python - "$1" <<'PY'
import sys

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

url = make_url(sys.argv[1])
name = url.database or "test"
server = {
    "host": url.host or "127.0.0.1",
    "port": url.port or 5432,
    "user": url.username,
    "password": url.password,
    "connect_timeout": 3,
}
try:
    conn = psycopg.connect(dbname=name, **server)
except psycopg.OperationalError as exc:
    if f'database "{name}" does not exist' not in str(exc):
        print(" ".join(line.strip() for line in str(exc).splitlines()) or repr(exc))
        sys.exit(1)
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc2:
        print(f"database {name} is missing and cannot be created: {exc2}".strip())
        sys.exit(1)
    print(f"bootstrap: created database {name}", file=sys.stderr)
    conn = psycopg.connect(dbname=name, **server)
with conn:
    row = conn.execute(
        "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
if not (row and row[0]):
    print(f"role {url.username} may not create databases")
    sys.exit(1)
PY
}

# The URL with its password, if any, as ***.
redacted() {
  .venv/bin/python -c 'import sys; from sqlalchemy.engine import make_url; print(make_url(sys.argv[1]).render_as_string(hide_password=True))' "$1"
}

free_port() {
  .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts (creating it if needed) the private cluster; prints its URL.
start_private_pg() {
  local bindir major home data port password
  bindir=$(pg_bindir)
  major=$("$bindir/pg_ctl" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')
  mkdir -p "$PGTEST"
  chmod 711 "$PGTEST"  # the cluster's owner may pass through; the URL files are 600
  if [ -f "$PGTEST/home" ] && [ ! -f "$(cat "$PGTEST/home")/data/PG_VERSION" ]; then
    rm -f "$PGTEST/home"
  fi
  # A cluster of another PostgreSQL version is recreated below: stop it first.
  if private_pg_running && [ "$(cat "$(cat "$PGTEST/home")/data/PG_VERSION")" != "$major" ]; then
    stop_private_pg
  fi
  # Where the cluster lives: inside the checkout if its owner can enter it.
  home=$PGTEST/cluster
  mkdir -p "$home"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$home"
    if ! runuser -u postgres -- test -w "$home"; then
      rmdir "$home"
      home=/tmp/herald-pgtest-$(printf '%s' "$PWD" | sha256sum | cut -c1-12)
      mkdir -p "$home"
      chown postgres: "$home"
    fi
  fi
  chmod 700 "$home"
  echo "$home" > "$PGTEST/home"
  data=$home/data

  if [ ! -f "$data/PG_VERSION" ] || [ "$(cat "$data/PG_VERSION")" != "$major" ] \
    || [ ! -s "$PGTEST/password" ]; then
    echo "bootstrap: creating a private PostgreSQL $major cluster in $data" >&2
    as_owner rm -rf "$data"
    password=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')
    (umask 077 && echo "$password" > "$PGTEST/password")
    (umask 077 && echo "$password" > "$home/pwfile")
    [ "$(id -u)" -eq 0 ] && chown postgres: "$home/pwfile"
    # trust on its Unix socket, in $home (mode 700); a password on TCP.
    as_owner "$bindir/initdb" -D "$data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 --pwfile="$home/pwfile" -E UTF8 --no-locale \
      >"$home/initdb.log" 2>&1 || { cat "$home/initdb.log" >&2; exit 1; }
    rm -f "$home/pwfile"
  fi
  password=$(cat "$PGTEST/password")

  if private_pg_running; then
    port=$(sed -n 4p "$data/postmaster.pid")
  else
    port=$(free_port)
    echo "bootstrap: starting the private PostgreSQL on 127.0.0.1:$port" >&2
    # fsync and friends off: test data need not survive a crash.
    as_owner "$bindir/pg_ctl" start -D "$data" -l "$home/postgresql.log" -w -t 60 -s \
      -o "-c listen_addresses=127.0.0.1 -p $port -k '$home' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      >&2 || { tail -n 20 "$home/postgresql.log" >&2; exit 1; }
  fi
  echo "postgresql+psycopg://postgres:$password@127.0.0.1:$port/test"
}

if [ "$need_pg" = 1 ]; then
  if [ -z "$(pg_bindir)" ]; then
    echo "bootstrap: installing postgresql with apt-get"
    apt_install postgresql
  fi
  target=${HERALD_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
  if [ -z "${HERALD_TEST_POSTGRES_URL:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
    && command -v pg_lsclusters >/dev/null; then
    # The machine's own cluster on 5432, if it has one and it is down (e.g. after a reboot).
    cluster=$(pg_lsclusters --no-header 2>/dev/null | awk '$3 == 5432 && $4 == "down" {print $1, $2; exit}')
    if [ -n "$cluster" ]; then
      echo "bootstrap: starting PostgreSQL $cluster"
      # shellcheck disable=SC2086  # "version name"
      $SUDO pg_ctlcluster --skip-systemctl-redirect $cluster start || true
      for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    fi
  fi
  if reason=$(pg_check "$target"); then
    url=$target
    # A private cluster of an earlier run is not needed any more.
    stop_private_pg
  else
    echo "bootstrap: cannot use PostgreSQL at $(redacted "$target"): $reason"
    echo "bootstrap: the tests get a private PostgreSQL cluster instead (tests/bootstrap.sh explains)"
    url=$(start_private_pg)
    if ! reason=$(pg_check "$url"); then
      echo "bootstrap: the private PostgreSQL does not work either: $reason" >&2
      exit 1
    fi
  fi
  mkdir -p "$PGTEST"
  (umask 077 && echo "$url" > "$PGTEST/url")
  echo "bootstrap: tests use PostgreSQL at $(redacted "$url")"
fi
