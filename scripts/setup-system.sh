#!/usr/bin/env bash
# Installs the system packages the project needs when they are missing (Debian/Ubuntu, as root or via sudo):
#   PostgreSQL server binaries (local cluster), promtool (metric and alert-rule checks), kcat (foreign Kafka
#   client in tests), Chromium (headless browser tests), Java + Maven (the Kafka broker), npm (chart library,
#   axe-core), docker-compose (validates docker-compose.yml; no Docker engine is needed), gcc, libpq-dev and
#   python3-dev (CKAN's psycopg2 in the harvester environment .venv-ckan).
# Prints a clear message and fails when something is missing and cannot be installed.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# docker-compose only validates docker-compose.yml in the tests (no engine is needed for `config`).
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
# CKAN (the DCAT harvest test's .venv-ckan) builds psycopg2 from source: a compiler, libpq and Python headers.
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v pg_config >/dev/null 2>&1 || missing+=(libpq-dev)
python3 -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' || missing+=(python3-dev)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "Installing system packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "error: missing system packages (${missing[*]}); install them with your package manager" >&2
  echo "       (Debian/Ubuntu: apt-get install ${missing[*]}) or run 'make setup' as root." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get; install these packages by hand: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The Debian prometheus package would start a server via its service scripts; policy-rc.d keeps it off.
if [ -z "$SUDO" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "System packages installed."
