"""Node configuration: defaults < TOML file < command-line flags.

Every setting has a default that runs a node on one machine. `load_config`
reads a TOML file (see `ocs.example.toml`) and rejects unknown keys, so a typo
is an error and not a silently ignored setting. Command-line flags override
only what they give.
"""

from __future__ import annotations

import tomllib
from typing import Any

import attrs


@attrs.frozen
class NodeConfig:
    origin_host: str = "ocs.localdomain"
    """Origin-Host (DiameterIdentity) of this node, sent in every message."""
    origin_realm: str = "localdomain"
    """Origin-Realm of this node."""
    served_realms: tuple = ()
    """Destination-Realm values answered here; empty means origin_realm only (else 3003)."""
    host_ip_addresses: tuple = ("127.0.0.1",)
    """Host-IP-Address values advertised in CEA (RFC 6733 §5.3)."""
    product_name: str = "ocs"
    """Product-Name advertised in CEA."""
    vendor_id: int = 0
    """Vendor-Id advertised in CEA (0: none)."""


@attrs.frozen
class ListenConfig:
    address: str = "0.0.0.0"
    """Address to listen on for Diameter over TCP."""
    port: int = 3868
    """TCP port (RFC 6733 §2.1: 3868)."""


@attrs.frozen
class DiameterConfig:
    tw: float = 30.0
    """Watchdog interval Twinit in seconds (RFC 3539: default 30, minimum 6), ±2 s jitter."""
    cer_timeout: float = 10.0
    """Seconds a new connection may take to send its CER before it is closed."""
    dpa_timeout: float = 5.0
    """Seconds to wait for DPA (or for the peer to close after our DPA)."""
    max_message_length: int = 1 << 20
    """Largest accepted message in octets; a longer header closes the connection."""
    duplicate_lifetime: float = 240.0
    """Seconds an answer is kept for duplicate requests (RFC 6733: E2E ids unique >= 4 min)."""
    allowed_peers: tuple | None = None
    """Origin-Host values allowed to connect; None (default) accepts any peer, others get 3010."""
    dictionaries: str | None = None
    """Folder of *.dict files; None uses the dictionaries/ shipped with ocs."""


@attrs.frozen
class LogConfig:
    level: str = "info"
    """debug, info, warning or error."""
    format: str = "text"
    """text or json (one JSON object a line)."""


@attrs.frozen
class Config:
    node: NodeConfig = NodeConfig()
    listen: ListenConfig = ListenConfig()
    diameter: DiameterConfig = DiameterConfig()
    log: LogConfig = LogConfig()


_SECTIONS = {"node": NodeConfig, "listen": ListenConfig, "diameter": DiameterConfig, "log": LogConfig}


class ConfigError(Exception):
    pass


def _section(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table")
    names = {f.name for f in attrs.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{where}]: {', '.join(sorted(unknown))}")
    out = {}
    for f in attrs.fields(cls):
        if f.name not in values:
            continue
        v = values[f.name]
        if isinstance(v, list):
            v = tuple(v)
        default = f.default
        if default is not None and not isinstance(v, type(default)) and not (
                isinstance(default, float) and isinstance(v, int)):
            raise ConfigError(f"[{where}] {f.name}: expected {type(default).__name__}, got {v!r}")
        out[f.name] = float(v) if isinstance(default, float) else v
    return cls(**out)


def from_dict(data: dict[str, Any]) -> Config:
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    return Config(**{name: _section(cls, data.get(name, {}), name) for name, cls in _SECTIONS.items()})


def load_config(path: str | None) -> Config:
    if path is None:
        return Config()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    return from_dict(data)


def override(config: Config, section: str, **values) -> Config:
    """Apply command-line flags given (None means 'not given')."""
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return config
    return attrs.evolve(config, **{section: attrs.evolve(getattr(config, section), **given)})
