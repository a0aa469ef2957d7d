#!/usr/bin/env bash
# Install what EnvCat needs on a fresh Debian machine, then the project into .venv.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
WITH_TEST_DEPS=${WITH_TEST_DEPS:-0}

apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
"$PYTHON" -m venv --help >/dev/null 2>&1 || apt_packages+=(python3-venv)
"$PYTHON" -c "import ensurepip" >/dev/null 2>&1 || apt_packages+=(python3-venv)
if [ "$WITH_TEST_DEPS" = 1 ]; then
  # Real shells for the quoting round-trip tests, Chromium for the browser tests.
  for tool in zsh fish dash; do command -v "$tool" >/dev/null || apt_packages+=("$tool"); done
  [ -x /usr/bin/chromium ] || apt_packages+=(chromium)
fi

if [ ${#apt_packages[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing ${apt_packages[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    echo "bootstrap: please install: ${apt_packages[*]} (apt-get install ${apt_packages[*]})" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.envcat-installed"
extras=server
[ "$WITH_TEST_DEPS" = 1 ] && extras=server,dev
want="$extras $(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
fi
