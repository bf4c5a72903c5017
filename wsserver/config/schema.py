"""The configuration schema: one frozen dataclass per TOML table.

Each field is declared with :func:`wsserver.config.settings.setting`: its annotation says what
the key holds and its metadata what it allows, so one registry drives validation, command-line
flags, ``wsserver check`` and the reference docs. Field names are the TOML key names of
``wsserver.example.toml``: they are the operator's vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wsserver.config import values
from wsserver.config.adapter_settings import AdapterSettings
from wsserver.config.settings import setting
from wsserver.config.tls_settings import KeystoreConfig, TruststoreConfig
from wsserver.config.values import ALIAS_HELP, ALIAS_PATTERN

# The most worker processes one master runs: the --workers flag, SIGTTIN and the shared
# tables the master sizes before it forks (prefork LoadBoard, runtime ConnectionTable) all
# follow this one number.
MAX_WORKERS = 256
BROKER_HELP = values.BROKER_HELP
CONNECTION_TYPES = ("ws", "wss", "admin")
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class ServerTLSConfig:
    keystore: str = setting("", help="keystore alias of the server's default key")
    key_alias: str = setting("", help="key alias inside that keystore")


@dataclass(frozen=True)
class ServerConfig:
    workers: int = setting(0, min=0, max=MAX_WORKERS, cli="--workers", help="worker processes; 0 = CPU count")
    graceful_timeout: float = setting(30, min=0, max=3600, help="seconds to drain sessions on reload/stop")
    worker_timeout: float = setting(
        30, min=1, max=3600, help="seconds without a heartbeat before a worker is replaced"
    )
    log_level: str = setting("info", choices=LOG_LEVELS, cli="--log-level")
    log_format: str = setting("text", choices=("text", "json"), cli="--log-format")
    pid_file: str = setting("", cli="--pid", help="path of a pid file; empty = none")
    reuse_port: bool = setting(
        False,
        cli="--reuse-port",
        help="one SO_REUSEPORT listening socket per worker instead of shared sockets",
    )
    allow_no_ports: bool = setting(
        False, help="accept a file with no [[ports]] (e.g. only the admin API); else it is refused"
    )
    tls: ServerTLSConfig = setting(factory=ServerTLSConfig)


@dataclass(frozen=True)
class PoolConfig:
    min: int = setting(10, min=0, max=10000, help="executors kept warm")
    max: int = setting(200, min=1, max=10000, help="executors at most")
    priority: int = setting(5, min=1, max=10, help="1..10, larger = higher")
    mode: str = setting("greenlet", choices=("greenlet", "thread"))
    idle_shrink_ms: int = setting(
        60000, min=0, max=86_400_000, help="idle time before the pool shrinks to min"
    )


@dataclass(frozen=True)
class AccessConfig:
    mode: str = setting("allow", choices=("allow", "deny"), help="endpoint access default")
    deny_endpoints: tuple[str, ...] = setting((), help='endpoint paths; used when mode = "allow"')
    allow_endpoints: tuple[str, ...] = setting((), help='endpoint paths; used when mode = "deny"')
    ip_mode: str = setting("allow", choices=("allow", "deny"), help="IP access default")
    ip_deny: tuple[str, ...] = setting((), rule=values.NETWORK, help="addresses or CIDRs")
    ip_allow: tuple[str, ...] = setting((), rule=values.NETWORK, help="addresses or CIDRs")
    trusted_proxies: tuple[str, ...] = setting(
        (),
        rule=values.NETWORK,
        help="reverse proxies (addresses or CIDRs) whose X-Forwarded-For names the client for IP rules, "
        "rate limits and logs",
    )


@dataclass(frozen=True)
class OriginConfig:
    same_origin: bool = setting(False)
    allowed: tuple[str, ...] = setting((), rule=values.ORIGIN, help="scheme://host[:port]")
    allow_missing: bool = setting(True, help="accept requests without an Origin header")
    hosts: tuple[str, ...] = setting(
        (),
        help="the server's own names (host or host:port); when set, Host must be one and same_origin judges by them",
    )


@dataclass(frozen=True)
class PortTLSConfig:
    keystore: str = setting("")
    key_alias: str = setting("")
    client_certs: str = setting("none", choices=("none", "request", "require"))
    truststore: str = setting("", help="default: the keystore")
    min_version: str = setting("1.2", choices=("1.2", "1.3"))
    ciphers: str = setting("", help='TLS 1.2 cipher list (OpenSSL syntax); "" = Mozilla intermediate')
    ocsp: str = setting(
        "",
        help='an [[adapters]] entry of type "ocsp": client certificates are checked after the TLS handshake',
    )
    ocsp_stapling: bool = setting(False, help="staple an OCSP response for the port's own certificate")
    ocsp_stapling_responder: str = setting(
        "", help='http(s) URL of the OCSP responder for stapling; "" = the certificate\'s AIA'
    )
    # A table keyed by host names, not a fixed set of keys: checked by wsserver.security.sni.
    sni: dict[str, Any] = setting(
        factory=dict,
        pattern_help='a table of "host name" = "key alias" ([ports.tls.sni])',
        help='SNI: host names ("app.example.com", "*.example.com") -> key alias in the port\'s keystore or '
        '"KEYSTORE:ALIAS"; other names get the port\'s key; see docs/tls.md',
    )


@dataclass(frozen=True)
class JWTConfig:
    algorithms: tuple[str, ...] = setting(
        ("HS256",),
        choices=JWT_ALGORITHMS,
        help="accepted signature algorithms; HS256 with a shared secret, or RS256/ES256 with a public key",
    )
    key: str = setting(
        "", secret=True, redact=True, help="HS256 secret or PEM public key; prefer key_file or key_env"
    )
    key_file: str = setting("", help="file holding the secret or the PEM public key")
    key_env: str = setting("", help="environment variable holding the secret or the PEM public key")
    cookie: str = setting(
        "",
        pattern=r"[!#$%&'*+\-.^_`|~0-9A-Za-z]*",
        pattern_help="a cookie name (an HTTP token)",
        help='cookie carrying the JWT; "" = none',
    )
    bearer: bool = setting(True, help="accept the JWT in Authorization: Bearer")
    audience: str = setting("", help='required "aud"; "" = tokens must not have one')
    issuer: str = setting("", help='required "iss"; "" = not checked')
    user_claim: str = setting(
        "sub", pattern=r".{1,255}", pattern_help="a claim name", help="claim naming the user"
    )
    known_users_only: bool = setting(True, help="the user must be a [[users]] entry (whose limits apply)")
    require_exp: bool = setting(True, help='refuse tokens without "exp"')
    leeway_s: int = setting(30, min=0, max=600, help="clock skew allowed for exp and nbf")


@dataclass(frozen=True)
class AuthRateLimitConfig:
    burst: int = setting(
        10, min=0, max=1_000_000, help="failed attempts a client address may make at once; 0 = no limit"
    )
    refill_per_minute: float = setting(
        6.0, min=0.001, max=1_000_000, help="failed attempts given back per minute"
    )
    max_clients: int = setting(
        100_000, min=1, max=10_000_000, help="client addresses remembered (least recent forgotten)"
    )
    ipv6_prefix: int = setting(64, min=1, max=128, help="IPv6 clients count per prefix of this length")


@dataclass(frozen=True)
class PortConfig:
    alias: str = setting("", required=True, pattern=ALIAS_PATTERN, pattern_help=ALIAS_HELP)
    port: int = setting(0, required=True, min=1, max=65535)
    enabled: bool = setting(True)
    protocol: str = setting("ws", choices=("ws", "wss"))
    proxy_protocol: str = setting(
        "off",
        choices=("off", "v1", "v2", "any"),
        help="expect a PROXY protocol header (HAProxy send-proxy / send-proxy-v2) from [ports.access] "
        'trusted_proxies before the request (on wss ports before the TLS handshake); "any" = v1 or v2',
    )
    bind: str = setting(
        "", rule=values.BIND, help='"" = all addresses; an IPv4 or IPv6 literal or a host name'
    )
    backlog: int = setting(6000, min=1, max=65535)
    description: str = setting("")
    package: str = setting("", help="disabling the package disables the port")
    idle_timeout_ms: int = setting(300000, min=0, max=86_400_000, help="0 = never")
    handshake_timeout_ms: int = setting(10000, min=1, max=600_000)
    max_message_size: int = setting(1048576, min=1, max=2**31 - 1, help="bytes, after decompression")
    max_header_size: int = setting(16384, min=1024, max=1048576)
    compression: bool = setting(True, help="permessage-deflate")
    compression_window_bits: int = setting(
        11,
        min=9,
        max=15,
        help="permessage-deflate: our compressor's window, 2^n bytes (a client's server_max_window_bits may "
        "lower it); see docs/protocol.md",
    )
    compression_client_window_bits: int = setting(
        11,
        min=9,
        max=15,
        help="permessage-deflate: client_max_window_bits asked of a client that offers it, which bounds our "
        "inflater's window; 15 = ask nothing",
    )
    compression_mem_level: int = setting(
        4, min=1, max=9, help="permessage-deflate: zlib memLevel of our compressor (memory vs ratio)"
    )
    max_connections: int = setting(
        0, min=0, max=10_000_000, help="sessions on this port across all workers; 0 = unlimited"
    )
    max_connections_per_worker: int = setting(
        0, min=0, max=10_000_000, help="sessions on this port in one worker; 0 = unlimited"
    )
    max_queue: int = setting(32, min=1, max=100_000, help="inbound messages waiting per session")
    write_limit_action: str = setting(
        "close",
        choices=("close", "wait"),
        help="when write_limit is exceeded: close the session with 1013, or make the sender wait",
    )
    write_limit: int = setting(1048576, min=1024, max=2**31 - 1, help="outbound bytes buffered per session")
    ping_interval_ms: int = setting(20000, min=0, max=86_400_000, help="0 = no server pings")
    ping_timeout_ms: int = setting(20000, min=1, max=86_400_000)
    close_timeout_ms: int = setting(10000, min=1, max=600_000)
    health_path: str = setting(
        "/healthz",
        pattern=r"(/[!-~]*)?",
        pattern_help='"" or an absolute URL path such as /healthz',
        help='a plain GET of this path (no Upgrade) is answered 200 "ok", for load balancer checks; "" = off',
    )
    client_auth: str = setting("none")
    no_auth_user: str = setting("")
    auth_timeout_ms: int = setting(2000, min=1, max=600_000)
    token_query_param: str = setting(
        "",
        pattern=r"[A-Za-z0-9_.~-]{0,64}",
        pattern_help="a query parameter name (A-Z a-z 0-9 _ . ~ -)",
        help='token and jwt: also accept the credential in this query parameter; "" = off',
    )
    pool: PoolConfig = setting(factory=PoolConfig)
    access: AccessConfig = setting(factory=AccessConfig)
    origin: OriginConfig = setting(factory=OriginConfig)
    jwt: JWTConfig = setting(factory=JWTConfig)
    auth_rate_limit: AuthRateLimitConfig = setting(
        factory=AuthRateLimitConfig, help="failed authentication attempts per client"
    )
    tls: PortTLSConfig | None = setting(None, help="wss only; omit to use [server.tls]")


@dataclass(frozen=True)
class PackageConfig:
    name: str = setting("", required=True, pattern=ALIAS_PATTERN, pattern_help=ALIAS_HELP)
    enabled: bool = setting(True)
    description: str = setting("")


@dataclass(frozen=True)
class EndpointConfig:
    path: str = setting(
        "", required=True, pattern=r"/[!-~]*", pattern_help="an absolute URL path such as /echo"
    )
    handler: str = setting(
        "",
        required=True,
        pattern=r"[A-Za-z_][\w.]*:[A-Za-z_]\w*",
        rule=values.HANDLER,
        pattern_help="module:Class, e.g. wsserver.endpoints.echo:Echo",
    )
    package: str = setting("")
    subprotocols: tuple[str, ...] = setting((), help="offered subprotocols, in preference order")


@dataclass(frozen=True)
class UserConfig:
    name: str = setting(
        "",
        required=True,
        pattern=r"[!-9;-~]{1,255}",
        pattern_help="1-255 printable ASCII characters without spaces or :",
    )
    password_hash: str = setting(
        "", secret=True, help='from `wsserver hash-password` (scrypt or argon2); "" = no password login'
    )
    token: str = setting(
        "",
        secret=True,
        redact=True,
        help='bearer token (>= 16 characters) or "sha256:" + its hex SHA-256; "" = none',
    )
    connection_types: tuple[str, ...] = setting(
        (), choices=CONNECTION_TYPES, help="ws | wss | admin; empty = all"
    )
    ports: tuple[str, ...] = setting((), help="port aliases; empty = all")
    endpoints: tuple[str, ...] = setting((), help="endpoint paths; empty = all")

    def __repr__(self) -> str:  # no secrets in tracebacks or debug output
        return f"UserConfig(name={self.name!r}, ...)"


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = setting(True, help="serve /metrics, /healthz and /readyz from the master")
    bind: str = setting(
        "127.0.0.1", rule=values.BIND, help='"" = all addresses; an IPv4 or IPv6 literal or a host name'
    )
    port: int = setting(9108, min=1, max=65535)
    user: str = setting("", help='basic auth user for /metrics; "" = no authentication')
    password_hash: str = setting("", secret=True, help="from `wsserver hash-password`; or use password_env")
    password_env: str = setting("", help="environment variable holding the basic auth password")
    allow: tuple[str, ...] = setting(
        (), rule=values.NETWORK, help="client addresses or CIDRs allowed to connect; empty = all"
    )

    def __repr__(self) -> str:  # no secrets in tracebacks or debug output
        return f"MetricsConfig(enabled={self.enabled!r}, bind={self.bind!r}, port={self.port!r}, ...)"


@dataclass(frozen=True)
class AdminTLSConfig:
    keystore: str = setting("", help='keystore alias; "" = plain HTTP')
    key_alias: str = setting("", help='key alias inside that keystore; "" = its only key')


@dataclass(frozen=True)
class AdminConfig:
    enabled: bool = setting(
        True, help="serve the admin API and console (needs a [[users]] entry allowed the admin type)"
    )
    bind: str = setting(
        "127.0.0.1", rule=values.BIND, help='"" = all addresses; an IPv4 or IPv6 literal or a host name'
    )
    port: int = setting(9100, min=1, max=65535)
    tls: AdminTLSConfig = setting(factory=AdminTLSConfig)


@dataclass(frozen=True)
class ClusterConfig:
    broker: str = setting(
        "",
        required=True,
        pattern_help=BROKER_HELP,
        rule=values.BROKER,
        secret=True,
        help="the Redis server every worker of every node publishes to and subscribes at (see docs/cluster.md)",
    )
    node: str = setting(
        "",
        pattern=r"[A-Za-z0-9_.-]{0,255}",
        pattern_help='"" or ' + ALIAS_HELP,
        help='the name of this server in logs and broker metrics; "" = the host name',
    )
    connect_timeout_ms: int = setting(
        2000, min=1, max=60_000, help="connecting to Redis, and waiting for one PUBLISH"
    )
    password_env: str = setting("", help='environment variable holding the Redis password; "" = no password')
    tls_ca_file: str = setting(
        "",
        help="rediss:// only: PEM file of the certificates that may sign the Redis server's; \"\" = the system's",
    )
    history_size: int = setting(
        0,
        min=0,
        max=10_000_000,
        help="messages kept per group (a Redis stream, trimmed approximately) for recovery by offset; "
        "0 = no history and no offsets",
    )
    history_ttl_s: int = setting(
        0,
        min=0,
        max=100_000_000,
        help="a group's history expires this many seconds after its last message; 0 = never",
    )
    presence_ttl_s: int = setting(
        60,
        min=0,
        max=86_400,
        help="members of groups are listed by presence() on every node; a member whose node stopped "
        "refreshing it (crashed) disappears after this many seconds; 0 = no presence",
    )
    prefix: str = setting(
        "wsserver",
        pattern=r"[A-Za-z0-9_.-]{1,64}",
        pattern_help="1-64 characters of a-z A-Z 0-9 _ . -",
        help="the first part of every Redis key and channel name: clusters sharing one Redis need different ones",
    )
    ready_requires_broker: bool = setting(
        True,
        help="/readyz answers 503 while a worker has no connection to the broker (a load balancer then drains this node)",
    )


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. ``source`` names the file it came from."""

    server: ServerConfig = setting(factory=ServerConfig)
    packages: tuple[PackageConfig, ...] = setting(())
    endpoints: tuple[EndpointConfig, ...] = setting(())
    ports: tuple[PortConfig, ...] = setting(())
    users: tuple[UserConfig, ...] = setting(())
    metrics: MetricsConfig = setting(factory=MetricsConfig)
    admin: AdminConfig = setting(factory=AdminConfig)
    cluster: ClusterConfig | None = setting(
        None,
        help="broadcasts between servers through Redis; omit it and they stay within this server",
    )
    adapters: tuple[AdapterSettings, ...] = setting(
        (),
        help="authentication backends (LDAP, RADIUS, HTTP, OCSP, one-time passwords); see docs/adapters.md",
    )
    keystores: tuple[KeystoreConfig, ...] = setting((), help="keys and certificates; see docs/tls.md")
    truststores: tuple[TruststoreConfig, ...] = setting(
        (), help="certificates trusted to sign clients' and backends' certificates; see docs/tls.md"
    )
    source: str = field(default="<built-in>", compare=False)

    def package(self, name: str) -> PackageConfig | None:
        return next((p for p in self.packages if p.name == name), None)

    def package_enabled(self, name: str) -> bool:
        """A port or endpoint with no package, or an enabled one, is live."""
        if not name:
            return True
        pkg = self.package(name)
        return pkg is None or pkg.enabled

    def active_ports(self) -> tuple[PortConfig, ...]:
        return tuple(p for p in self.ports if p.enabled and self.package_enabled(p.package))

    def active_endpoints(self) -> tuple[EndpointConfig, ...]:
        return tuple(e for e in self.endpoints if self.package_enabled(e.package))
