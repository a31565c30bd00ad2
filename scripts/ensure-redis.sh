#!/usr/bin/env bash
# Installs redis-server with apt when it is missing; the tests and the local runtime start it
# themselves as a plain process on a loopback port.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is not installed and apt-get is not available: install Redis 7 yourself" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "redis-server is missing and installing it needs root (or sudo): apt-get install redis-server" >&2
    exit 1
  fi
fi
echo "installing redis-server with apt-get ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
# Debian's package starts a system service where it can; sluice runs its own on a free port.
command -v redis-server >/dev/null
