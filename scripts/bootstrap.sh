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
  # promtool checks and unit-tests the alert rules in deploy/prometheus.
  command -v promtool >/dev/null || apt_packages+=(prometheus)
  # npm fetches axe-core (accessibility checks) and mermaid (diagrams in the docs).
  command -v npm >/dev/null || apt_packages+=(npm)
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
# The stamp holds the pyproject.toml digest and the extras installed for it. A run that
# needs a subset of those (`up` after `./scripts/test`) installs nothing.
stamp="$VENV/.envcat-installed"
extras=server
[ "$WITH_TEST_DEPS" = 1 ] && extras=server,dev
digest=$(sha256sum pyproject.toml | cut -c1-16)
{ read -r had_extras had_digest < "$stamp"; } 2>/dev/null || true
installed=",${had_extras:-},"
missing=0
for extra in ${extras//,/ }; do
  [[ "$installed" == *",$extra,"* ]] || missing=1
done
if [ "${had_digest:-}" != "$digest" ] || [ "$missing" = 1 ]; then
  # Keep what was installed for this same pyproject.toml: alternating never uninstalls.
  [ "${had_digest:-}" = "$digest" ] && extras=$(printf '%s\n' ${had_extras//,/ } ${extras//,/ } | sort -u | paste -sd, -)
  # uv installs the same requirements, resolved the same way, in seconds where pip takes
  # most of a minute (a fresh clone's test run pays it every time); pip is the fallback
  # wherever uv cannot be had or fails. --compile-bytecode does what pip does: otherwise
  # the first imports compile every module, in each of the test processes at once.
  if "$VENV/bin/python" -m pip install -q uv 2>/dev/null &&
    "$VENV/bin/uv" pip install -q --compile-bytecode --python "$VENV/bin/python" -e ".[$extras]"; then
    :
  else
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[$extras]"
  fi
  echo "$extras $digest" > "$stamp"
fi

# JavaScript for the accessibility checks and the docs' diagrams: pinned versions from
# scripts/js-deps.txt, fetched once with `npm pack` (npm checks the registry's integrity
# hash; scripts/fetch_js.py does the same where npm is missing) into
# .cache/js/<name>-<version>/. Nothing from a CDN at test or docs time.
fetch_js() {
  local name=$1 version=$2 file=$3 dest=".cache/js/$1-$2" tmp
  [ -f "$dest/$file" ] && return 0
  if ! command -v npm >/dev/null; then
    # The same registry tarball, checked against its sha512 integrity, without npm.
    python3 scripts/fetch_js.py "$name" || echo "bootstrap: could not fetch $name@$version" >&2
    return 0
  fi
  tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null 2>&1); then
    mkdir -p "$dest"
    tar -xzf "$tmp"/*.tgz -C "$dest" --strip-components=1 "package/$file" package/LICENSE
  else
    echo "bootstrap: could not fetch $name@$version with npm" >&2
  fi
  rm -rf "$tmp"
}
if [ "$WITH_TEST_DEPS" = 1 ]; then
  while read -r name version file; do
    case "$name" in ''|'#'*) continue ;; esac
    fetch_js "$name" "$version" "$file"
  done < scripts/js-deps.txt
fi
