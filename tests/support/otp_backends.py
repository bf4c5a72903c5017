"""One-time-password servers on loopback for the GEMALTO adapter tests.

- privacyIDEA (PyPI ``privacyidea``, in its own virtualenv made by ``scripts/privacyidea.sh``
  under build/), SQLite, two ``pi-manage run`` servers sharing one database (as a cluster shares
  its database, so a code used on one is used on both). User alice of realm ``corp`` has a TOTP
  token enrolled over the REST API with :data:`TOTP_KEY`.
- FreeRADIUS with a challenge-response policy: the password (files + pap) first, then an
  Access-Challenge with a fresh State, then the TOTP code, checked by ``otp_check.py`` through
  rlm_exec (the State must be the one issued; a counter at or below the last one used is a
  replay). Two servers share the OTP state directory.

Codes come from :class:`Totp`: every call hands out the code of a later 30-second step than
the one before, so each is fresh for the server (both accept up to 60 steps ahead: the token's
``timeWindow`` is 1800 s) and a test can reuse one on purpose. ../shared/backends.md §2 and §10 describe how both were verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.backends import FREERADIUS, Backend, free_port, have_commands, radiusd_conf_head, tcp_open

REPO = Path(__file__).resolve().parents[2]
PI_VENV = Path(os.environ.get("PRIVACYIDEA_VENV", REPO / "build" / "privacyidea-venv"))
PI_MANAGE = PI_VENV / "bin" / "pi-manage"
PI_ADMIN, PI_ADMIN_PASSWORD = "admin", "adminpw-test"  # as scripts/privacyidea.sh
TOTP_KEY = bytes.fromhex("3132333435363738393031323334353637383930")  # RFC 6238's test key
OTP_USERS = {"alice": "alicepw", "bob": "bobpw"}  # bob has no token
STEP = 30


def hotp(key: bytes, counter: int, digits: int = 6) -> str:
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


class Totp:
    """Fresh TOTP codes: each call a later time step than every earlier call."""

    def __init__(self, key: bytes = TOTP_KEY) -> None:
        self.key = key
        self.counter = int(time.time()) // STEP - 1
        self.lock = threading.Lock()

    def fresh(self) -> str:
        with self.lock:
            self.counter = max(self.counter + 1, int(time.time()) // STEP)
            return hotp(self.key, self.counter)

    def wrong(self) -> str:
        """A code of no step near now."""
        return hotp(self.key, int(time.time()) // STEP + 1000)


# --- privacyIDEA ------------------------------------------------------------------------------------

# The secret key and the pepper are those of scripts/privacyidea.sh (the template's admin hash).
PI_CONFIG = """\
SQLALCHEMY_DATABASE_URI = 'sqlite:///{d}/pi.sqlite'
SECRET_KEY = 'wsserver-test-secret'
PI_PEPPER = 'wsserver-test-pepper'
PI_ENCFILE = '{d}/enckey'
PI_AUDIT_KEY_PRIVATE = '{d}/private.pem'
PI_AUDIT_KEY_PUBLIC = '{d}/public.pem'
PI_AUDIT_NO_SIGN = True
PI_LOGFILE = '{d}/privacyidea.log'
PI_LOGLEVEL = 30
"""
TEMPLATE_FILES = ("pi.sqlite", "enckey", "private.pem", "public.pem")


def privacyidea_missing() -> str:
    if not PI_MANAGE.exists():
        return (
            f"privacyIDEA is not installed in {PI_VENV}: run scripts/privacyidea.sh "
            "(make test does; it needs PyPI)"
        )
    return ""


def _pi_env(directory: Path) -> dict[str, str]:
    return dict(os.environ, PRIVACYIDEA_CONFIGFILE=str(directory / "pi.cfg"))


def _template() -> Path:
    """The initialised database (keys, tables, the admin) that scripts/privacyidea.sh keeps beside
    the install; each run copies it (making it takes ~15 s)."""
    template = PI_VENV / "test-template"
    if not (template / ".done").exists():
        subprocess.run(
            ["bash", str(REPO / "scripts" / "privacyidea.sh")],
            check=False,
            timeout=600,
            env=dict(os.environ, PRIVACYIDEA_VENV=str(PI_VENV)),
        )
    if not (template / ".done").exists():
        pytest.skip(f"no privacyIDEA test database in {template}: scripts/privacyidea.sh failed")
    return template


class PrivacyIdea:
    """Two privacyIDEA servers over one SQLite database in ``directory``."""

    def __init__(self, directory: Path, count: int = 2) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        template = _template()
        for name in TEMPLATE_FILES:
            shutil.copy(template / name, directory / name)
        (directory / "pi.cfg").write_text(PI_CONFIG.format(d=directory))
        self.directory = directory
        self.servers: list[Backend] = []
        for i in range(count):
            port = free_port()
            backend = Backend(
                f"privacyidea{i + 1}",
                [str(PI_MANAGE), "run", "-h", "127.0.0.1", "-p", str(port)],
                directory,
                lambda b: tcp_open(b.port),
                env=_pi_env(directory),
            )
            backend.port = port
            backend.url = f"http://127.0.0.1:{port}"
            self.servers.append(backend)

    def start(self, timeout: float = 60.0) -> PrivacyIdea:
        """Start the servers that are not running (all at once: each takes seconds)."""
        threads = [
            threading.Thread(target=s.start, kwargs={"timeout": timeout})
            for s in self.servers
            if not s.running
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in self.servers:
            if not s.running:
                raise RuntimeError(f"{s.name} did not start:\n{s.logs()[-4000:]}")
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def api(self, method: str, path: str, body: dict | None = None, token: str = "") -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.servers[0].url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", token)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def enroll(self) -> None:
        """Realm corp of a passwd-file resolver, and a TOTP token for alice."""
        (self.directory / "users.txt").write_text(
            "".join(
                f"{name}:x:{1000 + i}:{1000 + i}:{name}:/home/{name}:/bin/sh\n"
                for i, name in enumerate(OTP_USERS)
            )
        )
        auth = self.api("POST", "/auth", {"username": PI_ADMIN, "password": PI_ADMIN_PASSWORD})
        token = auth["result"]["value"]["token"]
        self.api(
            "POST",
            "/resolver/files",
            {"type": "passwdresolver", "fileName": str(self.directory / "users.txt")},
            token,
        )
        self.api("POST", "/realm/corp", {"resolvers": "files"}, token)
        answer = self.api(
            "POST",
            "/token/init",
            {
                "type": "totp",
                "otpkey": TOTP_KEY.hex(),
                "user": "alice",
                "realm": "corp",
                "genkey": 0,
                "serial": "TOTP-ALICE",
                "timeWindow": 1800,
            },
            token,
        )  # codes up to 60 steps ahead
        assert answer["result"]["status"] is True, answer


# --- FreeRADIUS with challenge-response ---------------------------------------------------------------

OTP_CHECK = r'''
"""rlm_exec helper: "issue" a challenge State, or "check" the code answering it (TOTP, no replay)."""
import fcntl, hashlib, hmac, json, os, struct, sys, time

D = sys.argv[2]
user = os.environ.get("USER_NAME", "").strip('"')


def hotp(key, counter):
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    o = digest[-1] & 15
    return str((struct.unpack(">I", digest[o:o + 4])[0] & 0x7FFFFFFF) % 10**6).zfill(6)


with open(os.path.join(D, "lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    path = os.path.join(D, "db.json")
    db = json.load(open(path)) if os.path.exists(path) else {"states": {}, "last": {}}
    if sys.argv[1] == "issue":
        state = os.urandom(8).hex()
        db["states"][state] = user
        json.dump(db, open(path, "w"))
        print(f"State = 0x{state}")
        print('Reply-Message = "Enter your one-time code"')
        sys.exit(0)
    state = os.environ.get("STATE", "").lower().removeprefix("0x")
    code = os.environ.get("USER_PASSWORD", "").strip('"')
    if db["states"].pop(state, None) != user:
        json.dump(db, open(path, "w"))
        sys.exit(1)  # not a State this server issued to this user
    key = bytes.fromhex(json.load(open(os.path.join(D, "secrets.json"))).get(user, ""))
    now = int(time.time()) // 30
    last = db["last"].get(user, -1)
    for counter in range(now - 1, now + 60):
        if key and counter > last and hmac.compare_digest(hotp(key, counter), code):
            db["last"][user] = counter
            json.dump(db, open(path, "w"))
            sys.exit(0)
    json.dump(db, open(path, "w"))
    sys.exit(1)
'''


def make_challenge_freeradius(directory: Path, state_dir: Path, secret: str) -> Backend:
    directory.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "otp_check.py").write_text(OTP_CHECK)
    (state_dir / "secrets.json").write_text(json.dumps({"alice": TOTP_KEY.hex()}))
    port = free_port(socket.SOCK_DGRAM)
    program = f"{sys.executable} {state_dir / 'otp_check.py'}"
    (directory / "radiusd.conf").write_text(
        radiusd_conf_head(directory, secret)
        + f"""\
  always handled {{
    rcode = handled
  }}
  exec otp_issue {{
    wait = yes
    program = "{program} issue {state_dir}"
    input_pairs = request
    output_pairs = reply
    shell_escape = yes
  }}
  exec otp_check {{
    wait = yes
    program = "{program} check {state_dir}"
    input_pairs = request
    shell_escape = yes
  }}
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {port}
  }}
  authorize {{
    if (&State) {{
      update control {{
        &Auth-Type := OTP
      }}
    }}
    else {{
      files
      pap
    }}
  }}
  authenticate {{
    Auth-Type PAP {{
      pap
      if (ok) {{
        otp_issue
        update control {{
          &Response-Packet-Type := Access-Challenge
        }}
        handled
      }}
    }}
    Auth-Type OTP {{
      otp_check
    }}
  }}
}}
"""
    )
    (directory / "users").write_text(
        "".join(f'{user}  Cleartext-Password := "{password}"\n\n' for user, password in OTP_USERS.items())
    )
    backend = Backend(
        "freeradius-otp",
        [FREERADIUS, "-f", "-d", str(directory), "-l", "stdout"],
        directory,
        lambda b: "Ready to process requests" in b.logs(),
        stop_timeout=3.0,
    )
    backend.port = port
    backend.url = f"radius://127.0.0.1:{port}"
    return backend


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def privacyidea(tmp_path_factory: pytest.TempPathFactory):
    why = privacyidea_missing()
    if why:
        pytest.skip(why)
    pi = PrivacyIdea(tmp_path_factory.mktemp("privacyidea"))
    try:
        pi.start()
        pi.enroll()
        yield pi
    finally:
        pi.stop()


@pytest.fixture(scope="session")
def otp_radius_pair(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.backends import RADIUS_SECRET

    if have_commands(FREERADIUS):
        pytest.skip("missing freeradius: run scripts/system-deps.sh (apt freeradius)")
    base = tmp_path_factory.mktemp("radius-otp")
    pair = [make_challenge_freeradius(base / f"r{i}", base / "otp-state", RADIUS_SECRET) for i in (1, 2)]
    try:
        for backend in pair:
            backend.start()
        yield pair
    finally:
        for backend in pair:
            backend.stop()


@pytest.fixture(scope="session")
def pi_totp() -> Totp:
    """Codes for privacyIDEA's token (its own sequence: a code is used once per server family)."""
    return Totp()


@pytest.fixture(scope="session")
def radius_totp() -> Totp:
    return Totp()
