#!/usr/bin/env bash
# Installs privacyIDEA (PyPI, a one-time-password server) into a virtualenv of its own under
# build/ for the GEMALTO adapter tests (tests/support/otp_backends.py), and initialises a
# template database there (keys, tables, the admin) that each test run copies. privacyIDEA pins
# many packages of its own, so it never shares the project's virtualenv. Cached: a second run
# with the same version does nothing. A failed install (e.g. offline) is not fatal: the tests
# that need privacyIDEA skip and say why.
set -uo pipefail
cd "$(dirname "$0")/.."
VERSION=${PRIVACYIDEA_VERSION:-3.14}
VENV=${PRIVACYIDEA_VENV:-build/privacyidea-venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.stamp-privacyidea-$VERSION"
TEMPLATE="$VENV/test-template"

started=$(date +%s)
if [ ! -e "$STAMP" ] || [ ! -x "$VENV/bin/pi-manage" ]; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  # pip's "Location ... is ignored" notes about unused local indexes are noise here.
  if ! "$PYTHON" -m venv "$VENV" \
     || ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "privacyidea==$VERSION" \
          2> >(grep -v "^WARNING: Location " >&2); then
    rm -rf "$VENV"
    echo "privacyidea: could not install privacyidea==$VERSION into $VENV; the privacyIDEA tests will skip" >&2
    exit 0
  fi
  touch "$STAMP"
fi
VENV=$(cd "$VENV" && pwd)

if [ ! -e "$TEMPLATE/.done" ]; then
  work="$VENV/test-template.$$"
  rm -rf "$work" && mkdir -p "$work"
  d=$(cd "$work" && pwd)
  # The pepper and secret key must match tests/support/otp_backends.py: the admin's password hash
  # uses the pepper.
  cat > "$d/pi.cfg" <<CFG
SQLALCHEMY_DATABASE_URI = 'sqlite:///$d/pi.sqlite'
SECRET_KEY = 'wsserver-test-secret'
PI_PEPPER = 'wsserver-test-pepper'
PI_ENCFILE = '$d/enckey'
PI_AUDIT_KEY_PRIVATE = '$d/private.pem'
PI_AUDIT_KEY_PUBLIC = '$d/public.pem'
PI_AUDIT_NO_SIGN = True
PI_LOGFILE = '$d/privacyidea.log'
PI_LOGLEVEL = 30
CFG
  # The four pi-manage steps in one process: each start of pi-manage costs seconds.
  if ! (cd "$d" && PRIVACYIDEA_CONFIGFILE="$d/pi.cfg" "$VENV/bin/python" - >"$d/setup.log" 2>&1 <<'PY'
from privacyidea.cli.pimanage import cli

for args in (["setup", "create_enckey"], ["setup", "create_audit_keys"], ["setup", "create_tables"],
             ["admin", "add", "admin", "-p", "adminpw-test"]):
    cli.main(args, prog_name="pi-manage", standalone_mode=False)
PY
  ); then
    echo "privacyidea: initialising the test database failed (see $d/setup.log)" >&2
    exit 0
  fi
  touch "$d/.done"
  rm -rf "$TEMPLATE" && mv "$d" "$TEMPLATE"
fi
echo "privacyidea: privacyidea==$VERSION ready in $VENV ($(( $(date +%s) - started )) s)"
