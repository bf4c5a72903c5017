"""Real backends on loopback for tests: slapd, FreeRADIUS, ``openssl ocsp``, an HTTP auth
server, a delaying TCP proxy, black holes, and redis-server (the ``[cluster]`` broker).

Every server gets a free port on 127.0.0.1 and keeps it across stop/start, so a test can stop
one mid-run and bring it back. Subprocesses are stopped by their PID only. See
../shared/backends.md for how each server was verified. Needs: apt slapd ldap-utils freeradius
openssl redis-server; pip ldap3 pyrad trustme pyjks cryptography redis.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SLAPPASSWD = "/usr/sbin/slappasswd"
FREERADIUS = "/usr/sbin/freeradius"
OPENSSL = "openssl"

USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}
GROUP_MEMBERS = ("alice",)  # cn=staff
SERVICE_DN, SERVICE_PASSWORD = "cn=svc,dc=example,dc=test", "svcpw"
BASE_DN = "dc=example,dc=test"
RADIUS_SECRET = "testing123"
REDIS_SERVER = "redis-server"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def have_commands(*paths: str) -> list[str]:
    """The commands of ``paths`` that are missing."""
    import shutil

    return [p for p in paths if shutil.which(p) is None]


class Backend:
    """A server subprocess with fixed ports: ``start()``, ``stop()``, ``start()`` again."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        workdir: Path,
        ready: Callable[[Backend], bool],
        stop_timeout: float = 5.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.workdir = workdir
        self.ready = ready
        self.stop_timeout = stop_timeout
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log_start = 0
        self.url = ""
        self.port = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        """What the server printed since its latest start (the log file spans restarts)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 10.0) -> Backend:
        assert not self.running, f"{self.name} already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed right after spawn
        self._log_start = log.tell()
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            if self.ready(self):
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.logs()[-4000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


# --- TLS material -------------------------------------------------------------------------------


class Pki:
    """A trustme CA with a server certificate for 127.0.0.1 and a client certificate, as files."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        client = self.ca.issue_cert("client@example.test", common_name="wsserver-client")
        self.ca_pem = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        server.private_key_pem.write_to_path(str(self.server_key))
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        self.server_combined = directory / "server-combined.pem"
        server.private_key_and_cert_chain_pem.write_to_path(str(self.server_combined))
        self.client_combined = directory / "client-combined.pem"
        client.private_key_and_cert_chain_pem.write_to_path(str(self.client_combined))
        der = x509.load_pem_x509_certificate(server.cert_chain_pems[0].bytes()).public_bytes(
            serialization.Encoding.DER
        )
        self.server_sha256 = hashlib.sha256(der).hexdigest()

    def jks_truststore(self, password: str = "changeit") -> Path:
        """The CA as a JKS trusted-certificate entry (pyjks)."""
        import jks

        der = x509.load_pem_x509_certificate(self.ca_pem.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        entry = jks.TrustedCertEntry.new("testca", der)
        path = self.dir / "trust.jks"
        jks.KeyStore.new("jks", [entry]).save(str(path), password)
        return path

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.server_combined))
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.ca_pem))
        return context


# --- slapd ---------------------------------------------------------------------------------------


def _slappasswd(password: str) -> str:
    return subprocess.run(
        [SLAPPASSWD, "-s", password], check=True, capture_output=True, text=True
    ).stdout.strip()


def make_slapd(directory: Path, pki: Pki) -> Backend:
    """slapd with users alice/bob/carol, group cn=staff (alice), service account cn=svc; ldap + ldaps."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "db").mkdir(exist_ok=True)
    port, tls_port = free_port(), free_port()
    conf = directory / "slapd.conf"
    conf.write_text(f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {directory}/slapd.pid
TLSCACertificateFile {pki.ca_pem}
TLSCertificateFile {pki.server_cert}
TLSCertificateKeyFile {pki.server_key}
database mdb
maxsize 10485760
suffix "{BASE_DN}"
rootdn "cn=admin,{BASE_DN}"
rootpw {_slappasswd("adminpw")}
directory {directory}/db
access to attrs=userPassword by self =xw by anonymous auth by * none
access to * by * read
""")
    entries = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: svc\nuserPassword: {SERVICE_PASSWORD}\n",
    ]
    for user, password in USERS.items():
        entries.append(
            f"dn: uid={user},ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: {user}\n"
            f"cn: {user.title()}\nsn: {user[0].upper()}\nuserPassword: {password}\n"
        )
    members = "".join(f"member: uid={m},ou=people,{BASE_DN}\n" for m in GROUP_MEMBERS)
    entries.append(f"dn: cn=staff,ou=groups,{BASE_DN}\nobjectClass: groupOfNames\ncn: staff\n{members}")
    ldif = directory / "data.ldif"
    ldif.write_text("\n".join(entries))
    if not any((directory / "db").iterdir()):
        subprocess.run([SLAPADD, "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True)
    backend = Backend(
        "slapd",
        [SLAPD, "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/", "-d", "0"],
        directory,
        lambda b: tcp_open(port) and tcp_open(tls_port),
    )
    backend.port, backend.tls_port = port, tls_port
    backend.url = f"ldap://127.0.0.1:{port}"
    backend.tls_url = f"ldaps://127.0.0.1:{tls_port}"
    return backend


# --- FreeRADIUS ----------------------------------------------------------------------------------


def _radius_ready(port: int) -> Callable[[Backend], bool]:
    def ready(backend: Backend) -> bool:
        return "Ready to process requests" in backend.logs()

    return ready


def radiusd_conf_head(directory: Path, secret: str) -> str:
    """The start of a radiusd.conf for a test server in ``directory``: paths, log, the localhost
    client with ``secret``, and the ``modules`` section opened with pap and files (users file)."""
    return f"""\
raddbdir = {directory}
confdir = {directory}
logdir = {directory}
run_dir = {directory}
libdir = /usr/lib/freeradius
pidfile = {directory}/radiusd.pid
log {{
  destination = stdout
  auth = yes
}}
security {{
  reject_delay = 0
  status_server = yes
}}
client localhost {{
  ipaddr = 127.0.0.1
  secret = {secret}
}}
modules {{
  pap {{
  }}
  files {{
    filename = {directory}/users
  }}
"""


def make_freeradius(directory: Path, secret: str = RADIUS_SECRET) -> Backend:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port(socket.SOCK_DGRAM)
    (directory / "radiusd.conf").write_text(
        radiusd_conf_head(directory, secret)
        + f"""\
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {port}
  }}
  authorize {{
    files
    pap
  }}
  authenticate {{
    Auth-Type PAP {{
      pap
    }}
  }}
}}
"""
    )
    (directory / "users").write_text(
        "".join(
            f'{user}  Cleartext-Password := "{password}"\n       Reply-Message := "Hello {user}"\n\n'
            for user, password in USERS.items()
        )
    )
    backend = Backend(
        "freeradius",
        [FREERADIUS, "-f", "-d", str(directory), "-l", "stdout"],
        directory,
        _radius_ready(port),
        stop_timeout=3.0,
    )
    backend.port = port
    backend.url = f"radius://127.0.0.1:{port}"
    return backend


# --- OCSP ----------------------------------------------------------------------------------------


class SelfSignedCA:
    """A self-signed EC CA for the OCSP tests, written to ``directory`` as ca.pem and ca.key (what
    ``make_ocsp_responder`` reads)."""

    def __init__(self, directory: Path, common_name: str, now: dt.datetime) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self.ca_key.public_key())
            .serial_number(1)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_pem = directory / "ca.pem"
        self.ca_pem.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        self.ca_key_pem = directory / "ca.key"
        self.ca_key_pem.write_bytes(
            self.ca_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


class OcspPki(SelfSignedCA):
    """A CA with a good (serial 0x1001) and a revoked (0x1002) client certificate whose AIA
    points at ``aia_url``, and the responder's index.txt."""

    def __init__(self, directory: Path, aia_url: str) -> None:
        now = dt.datetime.now(dt.UTC)
        super().__init__(directory, "Test OCSP CA", now)
        self.dir = directory
        self.good = self._issue(0x1001, "good.test", aia_url, now)
        self.revoked = self._issue(0x1002, "revoked.test", aia_url, now)
        self.unknown = self._issue(0x1003, "unknown.test", aia_url, now)
        for name in ("good", "revoked", "unknown"):
            (directory / f"{name}.pem").write_bytes(
                getattr(self, name).public_bytes(serialization.Encoding.PEM)
            )
        expiry = (now + dt.timedelta(days=1)).strftime("%y%m%d%H%M%SZ")
        revoked_at = (now - dt.timedelta(minutes=5)).strftime("%y%m%d%H%M%SZ")
        self.index = directory / "index.txt"
        self.index.write_text(
            f"V\t{expiry}\t\t1001\tunknown\t/CN=good.test\n"
            f"R\t{expiry}\t{revoked_at},keyCompromise\t1002\tunknown\t/CN=revoked.test\n"
        )

    def _issue(self, serial: int, name: str, aia_url: str, now: dt.datetime) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        aia = x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(aia_url)
                )
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(aia, critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )


def make_ocsp_responder(directory: Path, pki: OcspPki, port: int | None = None) -> Backend:
    """``openssl ocsp`` (OpenSSL 3.0 listens on every address of the port; clients use 127.0.0.1).

    Readiness comes from the log, never from a probe connection: OpenSSL 3.0.19's responder
    spins at 100% CPU forever after a connection that closes without a request, even with
    ``-ignore_err``, and answers nobody after that.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    backend = Backend(
        "ocsp",
        [
            OPENSSL,
            "ocsp",
            "-index",
            str(pki.index),
            "-port",
            str(port),
            "-rsigner",
            str(pki.ca_pem),
            "-rkey",
            str(pki.ca_key_pem),
            "-CA",
            str(pki.ca_pem),
            "-nmin",
            "5",
            "-ignore_err",
        ],
        directory,
        lambda b: "waiting for OCSP client connections" in b.logs(),
    )
    backend.port = port
    backend.url = f"http://127.0.0.1:{port}/"
    return backend


# --- an HTTP auth server (threads, in the test process) ------------------------------------------


class HttpAuthServer:
    """``POST /auth`` with Basic or JSON credentials: 200 for USERS, 401 otherwise.

    ``status_override`` forces an answer (e.g. 503); ``delay`` sleeps before answering.
    With ``tls`` (a server ssl context) it serves HTTPS; the subjects of the client
    certificates it verified are in ``client_subjects`` ({"commonName": ...}). Counts requests.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self.requests = 0
        self.client_subjects: list[dict[str, str]] = []  # verified client certificates, in order
        self.status_override = 0
        self.delay = 0.0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/auth"

    @property
    def running(self) -> bool:
        return self._server is not None

    def _check(self, headers: dict[str, str], body: bytes) -> bool:
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        else:
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                return False
            user, password = doc.get("username", ""), doc.get("password", "")
        return USERS.get(user) == password

    def start(self) -> HttpAuthServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if owner.delay:
                    time.sleep(owner.delay)
                ok = owner._check({k.lower(): v for k, v in self.headers.items()}, body)
                status = owner.status_override or (200 if ok else 401)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128  # socketserver's 5 overflows under bursts: SYN dropped, 1 s retry

            def get_request(inner):
                sock, addr = super().get_request()
                if owner.tls is not None:
                    sock.settimeout(5)
                    sock = owner.tls.wrap_socket(sock, server_side=True)
                    peer = sock.getpeercert()
                    if peer:
                        owner.client_subjects.append({k: v for rdn in peer["subject"] for k, v in rdn})
                return sock, addr

            def handle_error(inner, request, client_address) -> None:
                pass

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = None


# --- a delaying TCP proxy, and black holes -------------------------------------------------------


class DelayProxy:
    """Forwards 127.0.0.1:port -> 127.0.0.1:target, holding every chunk from the target for
    ``delay`` seconds: a slow backend. Threads; ``stop()`` closes everything."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.url_port = self.port
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.delay), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        source.settimeout(30)
        try:
            for _ in range(100_000):
                data = source.recv(65536)
                if not data:
                    break
                if delay and self._stop.wait(delay):
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        for s in self._sockets:
            s.close()
        self._thread.join(2)


class BlackHole:
    """A TCP listener that accepts and never answers, or a UDP socket that never answers."""

    def __init__(self, kind: int = socket.SOCK_STREAM) -> None:
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            self.sock.listen(128)  # the kernel completes handshakes; nobody reads
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


class UdpDelayProxy:
    """127.0.0.1:port (UDP) -> 127.0.0.1:target, holding every answer for ``delay`` seconds."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.front.settimeout(0.1)
        self.port = self.front.getsockname()[1]
        self._stop = threading.Event()
        self._clients: dict[tuple[str, int], socket.socket] = {}
        self._threads = [threading.Thread(target=self._forward, daemon=True)]
        self._threads[0].start()

    def _forward(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.front.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = self._clients.get(client)
            if upstream is None:
                upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                upstream.connect(("127.0.0.1", self.target_port))
                upstream.settimeout(0.1)
                self._clients[client] = upstream
                thread = threading.Thread(target=self._answer, args=(upstream, client), daemon=True)
                self._threads.append(thread)
                thread.start()
            try:
                upstream.send(data)
            except OSError:
                pass

    def _answer(self, upstream: socket.socket, client: tuple[str, int]) -> None:
        while not self._stop.is_set():
            try:
                data = upstream.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            timer = threading.Timer(self.delay, self._send_back, args=(data, client))
            timer.daemon = True
            timer.start()

    def _send_back(self, data: bytes, client: tuple[str, int]) -> None:
        if not self._stop.is_set():
            try:
                self.front.sendto(data, client)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.front.close()
        for sock in self._clients.values():
            sock.close()


# --- Redis --------------------------------------------------------------------------------------


def _redis_ready(backend: Backend) -> bool:
    if not tcp_open(backend.port):
        return False
    try:
        with socket.create_connection(("127.0.0.1", backend.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def make_redis(directory: Path, port: int | None = None) -> Backend:
    """redis-server on 127.0.0.1 without persistence; ``url`` is its redis:// URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [
        REDIS_SERVER,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--daemonize",
        "no",
    ]
    backend = Backend("redis", cmd, directory, _redis_ready)
    backend.port = port
    backend.url = f"redis://127.0.0.1:{port}/0"
    return backend


# --- pytest fixtures (import them into a test module or a conftest) ------------------------------


def _need(*commands: str) -> None:
    missing = have_commands(*commands)
    if missing:
        pytest.skip(
            f"missing {', '.join(missing)}: run scripts/system-deps.sh (apt slapd ldap-utils freeradius "
            "openssl)"
        )


def _pair(backends: list) -> object:
    for backend in backends:
        backend.start()
    return backends


def ensure_running(backends: list) -> None:
    """Restart whatever a test stopped (session-scoped pairs are shared)."""
    for backend in backends:
        if not backend.running:
            backend.start()


@pytest.fixture(scope="session")
def adapter_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("adapter-pki"))


@pytest.fixture(scope="session")
def slapd_pair(tmp_path_factory: pytest.TempPathFactory, adapter_pki: Pki):
    _need(SLAPD, SLAPADD, SLAPPASSWD)
    base = tmp_path_factory.mktemp("slapd")
    pair = [make_slapd(base / f"s{i}", adapter_pki) for i in (1, 2)]
    try:
        yield _pair(pair)
    finally:
        for backend in pair:
            backend.stop()


@pytest.fixture(scope="session")
def radius_pair(tmp_path_factory: pytest.TempPathFactory):
    _need(FREERADIUS)
    base = tmp_path_factory.mktemp("radius")
    pair = [make_freeradius(base / f"r{i}") for i in (1, 2)]
    try:
        yield _pair(pair)
    finally:
        for backend in pair:
            backend.stop()


@pytest.fixture(scope="session")
def ocsp_pki(tmp_path_factory: pytest.TempPathFactory) -> OcspPki:
    """Its certificates' AIA names the first responder of ``ocsp_pair`` (``pki.ports``)."""
    ports = (free_port(), free_port())
    pki = OcspPki(tmp_path_factory.mktemp("ocsp-pki"), f"http://127.0.0.1:{ports[0]}/")
    pki.ports = ports
    return pki


@pytest.fixture(scope="session")
def ocsp_pair(tmp_path_factory: pytest.TempPathFactory, ocsp_pki: OcspPki):
    _need(OPENSSL)
    base = tmp_path_factory.mktemp("ocsp")
    pair = [make_ocsp_responder(base / f"o{i}", ocsp_pki, port) for i, port in enumerate(ocsp_pki.ports, 1)]
    try:
        yield _pair(pair)
    finally:
        for backend in pair:
            backend.stop()


@pytest.fixture(scope="session")
def http_pair():
    pair = [HttpAuthServer(), HttpAuthServer()]
    try:
        yield _pair(pair)
    finally:
        for backend in pair:
            backend.stop()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A fresh redis-server for one test (it may stop and start it again on the same port)."""
    if have_commands(REDIS_SERVER):
        pytest.skip("missing redis-server: run scripts/system-deps.sh (apt redis-server)")
    backend = make_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield backend.start()
    finally:
        backend.stop()
