"""wsserver configuration: the schema, the TOML loader and validator, and the writer.

from wsserver.config import load_config, ConfigError
cfg = load_config("wsserver.toml")   # None -> the built-in default config
"""

from wsserver.config.loader import (
    DEFAULT_CONFIG_TOML,
    ConfigError,
    default_config,
    load_config,
    parse_config,
    require_ports,
)
from wsserver.config.schema import (
    MAX_WORKERS,
    AccessConfig,
    AdminConfig,
    AdminTLSConfig,
    AuthRateLimitConfig,
    Config,
    EndpointConfig,
    JWTConfig,
    MetricsConfig,
    OriginConfig,
    PackageConfig,
    PoolConfig,
    PortConfig,
    PortTLSConfig,
    ServerConfig,
    ServerTLSConfig,
    UserConfig,
)
from wsserver.config.settings import setting
from wsserver.config.values import ALIAS_HELP, ALIAS_PATTERN
from wsserver.config.writer import dump_config, write_atomic

__all__ = [
    "ALIAS_HELP",
    "ALIAS_PATTERN",
    "DEFAULT_CONFIG_TOML",
    "MAX_WORKERS",
    "AccessConfig",
    "AdminConfig",
    "AdminTLSConfig",
    "AuthRateLimitConfig",
    "Config",
    "ConfigError",
    "EndpointConfig",
    "JWTConfig",
    "MetricsConfig",
    "OriginConfig",
    "PackageConfig",
    "PoolConfig",
    "PortConfig",
    "PortTLSConfig",
    "ServerConfig",
    "ServerTLSConfig",
    "UserConfig",
    "default_config",
    "dump_config",
    "load_config",
    "parse_config",
    "require_ports",
    "setting",
    "write_atomic",
]
