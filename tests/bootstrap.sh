#!/usr/bin/env bash
# Installs what Herald's demo and tests need on a fresh Debian machine:
#   the venv (.venv) with Herald and its dev tools; Prosody and prosody-modules;
#   ejabberd; promtool (Debian's prometheus package);
#   with --postgres, a running PostgreSQL on 127.0.0.1:5432.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pg=0
[ "${1:-}" = "--postgres" ] && need_pg=1
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

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
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prosody prosody-modules >/dev/null
fi

# --- ejabberd --------------------------------------------------------------
if ! command -v ejabberdctl >/dev/null; then
  echo "bootstrap: installing ejabberd with apt-get"
  $SUDO apt-get update -qq
  # policy-rc.d keeps the packaged service from starting; tests run their own.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ejabberd >/dev/null
fi

# --- promtool (checks the shipped Prometheus alert rules) -------------------
if ! command -v promtool >/dev/null; then
  echo "bootstrap: installing prometheus (for promtool) with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# --- PostgreSQL ----------------------------------------------------------
if [ "$need_pg" = 1 ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if ! command -v pg_ctlcluster >/dev/null; then
      echo "bootstrap: installing postgresql with apt-get"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    fi
    echo "bootstrap: starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
fi
