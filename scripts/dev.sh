#!/usr/bin/env bash
# One entry point for a fresh machine: install everything, then run the demo or the tests.
#   bash scripts/dev.sh demo [demo args]   install, then `fixalloc demo`
#   bash scripts/dev.sh test [pytest args] install, then ruff, mypy and the test suite
#   bash scripts/dev.sh install            install only
#   bash scripts/dev.sh mutants TARGET     install, then mutation testing (engine, recovery,
#                                          dedupe or all; hours, not part of the test run)
# quickfix has no wheels and takes ~5 minutes to compile: the built wheel is kept in
# $FIXALLOC_WHEELHOUSE (default ~/.cache/fixalloc/wheels) and reused on every later run.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${FIXALLOC_VENV:-$ROOT/.venv}
WHEELHOUSE=${FIXALLOC_WHEELHOUSE:-$HOME/.cache/fixalloc/wheels}
QUICKFIX_WHEELS=$WHEELHOUSE/quickfix-tls
QUICKFIX_VERSION=1.16.0
# The patched build's version, 1.16.0+fixalloc<N>: defined once, in the patch script.
QUICKFIX_BUILD=$(sed -n 's/^LOCAL_VERSION = "\(.*\)"$/\1/p' "$ROOT/scripts/patch_quickfix.py")
PYTHON=${PYTHON:-python3}

say() { printf '==> %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  command -v g++ >/dev/null || missing+=(g++)
  # quickfix is built with TLS (HAVE_SSL): OpenSSL headers to build, the openssl tool for
  # the tests' throwaway certificates.
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  command -v openssl >/dev/null || missing+=(openssl)
  [ -n "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || missing+=(postgresql)
  command -v runuser >/dev/null || missing+=(util-linux)
  # The audit tests edit a record with the sqlite3 shell, as the README shows.
  command -v sqlite3 >/dev/null || missing+=(sqlite3)
  # The web page's tests drive a real headless Chromium through Selenium, pointed at these
  # two binaries (Selenium Manager downloads nothing).
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
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
  # The PyPI sdist compiles its SSL engines out and carries defects a hostile peer can
  # reach; scripts/patch_quickfix.py turns TLS on and fixes those before the build. The
  # wheel's version has a local label ($QUICKFIX_BUILD), so an older unpatched build in
  # the wheelhouse or the venv is never taken for this one.
  mkdir -p "$QUICKFIX_WHEELS"
  if ls "$QUICKFIX_WHEELS"/quickfix-"$QUICKFIX_BUILD"-*.whl >/dev/null 2>&1; then
    return 0
  fi
  say "building quickfix $QUICKFIX_BUILD (TLS, patched) from source (about 8 minutes, once per machine)"
  local src
  src=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: -d "$src" "quickfix==$QUICKFIX_VERSION"
  tar -xzf "$src"/quickfix-"$QUICKFIX_VERSION".tar.gz -C "$src"
  "$VENV/bin/python" "$ROOT/scripts/patch_quickfix.py" "$src/quickfix-$QUICKFIX_VERSION"
  "$VENV/bin/pip" wheel --no-deps -q -w "$QUICKFIX_WHEELS" "$src/quickfix-$QUICKFIX_VERSION"
  rm -rf "$src"
}

quickfix_is_patched() {
  [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("quickfix"))' 2>/dev/null)" = "$QUICKFIX_BUILD" ]
}

quickfix_has_tls() {
  "$VENV/bin/python" - <<'PY'
import sys, tempfile, os, quickfix as fix
# The stub engines of a build without HAVE_SSL refuse construction with this message.
d = tempfile.mkdtemp()
cfg = os.path.join(d, "c.cfg")
open(cfg, "w").write("[DEFAULT]\nConnectionType=acceptor\nFileStorePath=%s\n" % d)
s = fix.SessionSettings(cfg)
class App(fix.Application):
    pass
try:
    fix.SSLSocketAcceptor(App(), fix.MemoryStoreFactory(), s)
except Exception as e:
    # With TLS built in, construction gets as far as "no sessions defined".
    sys.exit(1 if "HAVE_SSL not enabled" in str(e) else 0)
PY
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
  "$VENV/bin/pip" install -q --find-links "$QUICKFIX_WHEELS" -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
  if ! quickfix_is_patched; then
    # A venv made before the patches holds an older build: replace it.
    say "replacing quickfix with the patched build $QUICKFIX_BUILD"
    "$VENV/bin/pip" install -q --force-reinstall --no-deps --no-index \
      --find-links "$QUICKFIX_WHEELS" "quickfix==$QUICKFIX_BUILD" 2>&1 | grep -v '^WARNING: Location' || true
    quickfix_is_patched || { say "quickfix $QUICKFIX_BUILD did not install"; exit 1; }
  fi
  quickfix_has_tls || { say "quickfix has no TLS support"; exit 1; }
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
  if [ $# -eq 0 ]; then
    # The whole suite on two workers (pytest-xdist), a file per worker at a time: most of
    # an integration test is waiting on sessions and timers, so two at once on two cores
    # take about two thirds of the time one at a time does.
    "$VENV/bin/python" -m pytest -n "${FIXALLOC_TEST_WORKERS:-2}" --dist loadfile
  else
    "$VENV/bin/python" -m pytest "$@"
  fi
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
  mutants) install; exec "$VENV/bin/python" scripts/mutants.py "$@" ;;
  *) echo "usage: $0 {demo|test|install|mutants} [args]" >&2; exit 2 ;;
esac
