#!/usr/bin/env bash
# One entry point for a fresh machine: install everything, then run the demo or the tests.
#   bash scripts/dev.sh demo [demo args]   install, then `fixalloc demo`
#   bash scripts/dev.sh test [pytest args] install, then ruff, mypy and the test suite
#   bash scripts/dev.sh install            install only
# quickfix has no wheels and takes ~5 minutes to compile: the built wheel is kept in
# $FIXALLOC_WHEELHOUSE (default ~/.cache/fixalloc/wheels) and reused on every later run.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${FIXALLOC_VENV:-$ROOT/.venv}
WHEELHOUSE=${FIXALLOC_WHEELHOUSE:-$HOME/.cache/fixalloc/wheels}
QUICKFIX_VERSION=1.16.0
PYTHON=${PYTHON:-python3}

say() { printf '==> %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  command -v g++ >/dev/null || missing+=(g++)
  [ -n "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || missing+=(postgresql)
  command -v runuser >/dev/null || missing+=(util-linux)
  "$PYTHON" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
    || missing+=(python3-dev)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "missing system packages: ${missing[*]} (install them with sudo apt-get install)"
    return 1
  fi
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a cluster on install; the tests run their own throwaway one instead.
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
      pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
  fi
}

quickfix_wheel() {
  mkdir -p "$WHEELHOUSE"
  if ls "$WHEELHOUSE"/quickfix-"$QUICKFIX_VERSION"-*.whl >/dev/null 2>&1; then
    return 0
  fi
  say "building quickfix $QUICKFIX_VERSION from source (about 5 minutes, once per machine)"
  "$VENV/bin/pip" wheel --no-deps -q -w "$WHEELHOUSE" "quickfix==$QUICKFIX_VERSION"
}

install() {
  apt_install
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v '^WARNING: Location' || true
  quickfix_wheel
  say "installing fixalloc and its dependencies"
  "$VENV/bin/pip" install -q --find-links "$WHEELHOUSE" -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c 'import quickfix, engine, gateway' \
    || { say "installation incomplete"; exit 1; }
}

run_tests() {
  say "ruff"
  "$VENV/bin/ruff" check engine gateway tests
  say "mypy (strict on engine/)"
  "$VENV/bin/mypy" engine gateway
  say "pytest"
  set +e
  "$VENV/bin/python" -m pytest "$@"
  local rc=$?
  set -e
  # pytest exits 5 when it collected nothing: that is a failure unless a filter was asked for.
  if [ $rc -eq 5 ] && [ $# -gt 0 ]; then
    say "no tests matched the selection: $*"
    return 0
  fi
  return $rc
}

cmd=${1:-test}
shift || true
case "$cmd" in
  install) install ;;
  demo) install; exec "$VENV/bin/fixalloc" demo "$@" ;;
  test) install; run_tests "$@" ;;
  *) echo "usage: $0 {demo|test|install} [args]" >&2; exit 2 ;;
esac
