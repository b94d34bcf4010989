"""Node configuration: defaults < TOML file < command-line flags.

Every setting has a default that runs a node on one machine. `load_config`
reads a TOML file (see `ocs.example.toml`) and rejects unknown keys, so a typo
is an error and not a silently ignored setting. Command-line flags override
only what they give.
"""

from __future__ import annotations

import ipaddress
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
    """Destination-Realm values answered here besides origin_realm (others get 3003)."""
    host_ip_addresses: tuple = ("127.0.0.1",)
    """Host-IP-Address values advertised in CEA (RFC 6733 §5.3)."""
    product_name: str = "ocs"
    """Product-Name advertised in CEA."""
    vendor_id: int = 0
    """Vendor-Id advertised in CEA (0: none)."""
    workers: int = 0
    """Worker processes of `ocs serve`, each with its own event loop, sharing the port
    (SO_REUSEPORT) and the LMDB cache; 0: one per CPU core."""


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
class StoreConfig:
    path: str = "var/ocs.lmdb"
    """Folder of the LMDB environment (the balance cache), shared by every process on the host."""
    map_size: int = 4 << 30
    """Largest size the environment may grow to, in octets (LMDB map size)."""
    durability: str = "fsync"
    """fsync: every group commit is on disk before its answers go out (survives power loss);
    os: commits reach the OS page cache (survive a crash of the process, not of the host)."""
    max_batch: int = 512
    """Most requests in one group-commit write transaction."""
    sync_interval: float = 1.0
    """With durability "os": seconds between background flushes to disk."""


@attrs.frozen
class ChargingConfig:
    validity_time: int = 600
    """Validity-Time in seconds for grants whose tariff sets none (RFC 4006 §8.33)."""
    tcc_factor: int = 2
    """Tcc, the server's session supervision timer, is this many Validity-Times (RFC 8506 §13)."""
    answer_retention: int = 120
    """Seconds the answer of a finished session or event is kept for duplicate requests."""
    sweep_interval: float = 1.0
    """Seconds between runs of the sweeper that releases expired sessions (Tcc)."""
    notice_interval: float = 0.1
    """Seconds between looks for re-authorize/abort notices (RAR/ASR) the EM gateway queued."""
    max_pending: int = 10000
    """Most CCRs a worker holds unanswered (waiting for their group commit); past it a new
    one is answered 3004 DIAMETER_TOO_BUSY at once (RFC 6733 §7.1.3) and charged nothing."""


@attrs.frozen
class MasterConfig:
    url: str = "sqlite:var/master.db"
    """The master database: sqlite:PATH (embedded default) or postgresql://USER@HOST/DB."""


@attrs.frozen
class EmConfig:
    poll_interval: float = 0.2
    """Seconds between looks at the change log when no notification wakes the EM gateway
    (SQLite has no LISTEN/NOTIFY; on PostgreSQL this is only a safety net)."""
    batch: int = 500
    """Most changes applied in one cache transaction."""


@attrs.frozen
class BrmConfig:
    poll_interval: float = 0.5
    """Seconds between looks at the outbox when it was found empty."""
    batch: int = 1000
    """Most rated events delivered to the master in one master transaction."""
    snapshot_interval: float = 300.0
    """Seconds between balance snapshots written to the master (0: never)."""
    auto_bill: bool = False
    """Run the bill run of a cycle (calendar month, UTC) once it has ended and its events are in."""
    invoice_dir: str = "var/invoices"
    """Folder the bill run writes invoices to (JSON, CSV and HTML per account)."""


@attrs.frozen
class MetricsConfig:
    listen: str = "127.0.0.1:9464"
    """HOST:PORT of the Prometheus /metrics endpoint ("" turns it off)."""
    interval: float = 1.0
    """Seconds between the snapshots each process publishes into the store for it."""


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
    store: StoreConfig = StoreConfig()
    charging: ChargingConfig = ChargingConfig()
    master: MasterConfig = MasterConfig()
    em: EmConfig = EmConfig()
    brm: BrmConfig = BrmConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()


_SECTIONS = {"node": NodeConfig, "listen": ListenConfig, "diameter": DiameterConfig,
             "store": StoreConfig, "charging": ChargingConfig, "master": MasterConfig,
             "em": EmConfig, "brm": BrmConfig, "metrics": MetricsConfig, "log": LogConfig}


class ConfigError(Exception):
    pass


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_strs(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, str) for x in v)


def _is_ips(v) -> bool:
    if not _is_strs(v) or not v:
        return False
    try:
        for x in v:
            ipaddress.ip_address(x)
    except ValueError:
        return False
    return True


def _is_listen(v) -> bool:
    if not isinstance(v, str):
        return False
    host, sep, port = v.rpartition(":")
    return bool(sep) and port.isdigit() and int(port) <= 65535


def split_listen(v: str) -> tuple[str, int]:
    """("HOST", PORT) of a "HOST:PORT" setting ("[::1]:9464" gives "::1")."""
    host, _, port = v.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _number(lo: float, hi: float | None = None, integer: bool = False):
    def check(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            return False
        return v >= lo and (hi is None or v <= hi)
    return check


# (section, setting) -> (test, what a valid value is); every setting has one
_RULES = {
    ("node", "origin_host"): (_is_str, "a DiameterIdentity string"),
    ("node", "origin_realm"): (_is_str, "a realm string"),
    ("node", "served_realms"): (_is_strs, "a list of realm strings"),
    ("node", "host_ip_addresses"): (_is_ips, "a non-empty list of IP address strings"),
    ("node", "product_name"): (_is_str, "a string"),
    ("node", "vendor_id"): (_number(0, 2**32 - 1, True), "an integer 0..4294967295"),
    ("node", "workers"): (_number(0, 1024, True), "an integer 0..1024 (0: one per core)"),
    ("listen", "address"): (_is_str, "an address string"),
    ("listen", "port"): (_number(0, 65535, True), "a port number 0..65535"),
    ("diameter", "tw"): (_number(6), "seconds, at least 6 (RFC 3539)"),
    ("diameter", "cer_timeout"): (_number(0.001), "seconds above 0"),
    ("diameter", "dpa_timeout"): (_number(0.001), "seconds above 0"),
    ("diameter", "max_message_length"): (_number(20, 2**24 - 4, True), "octets, 20..16777212"),
    ("diameter", "duplicate_lifetime"): (_number(0), "seconds, 0 or more"),
    ("diameter", "allowed_peers"): (lambda v: v is None or _is_strs(v), "a list of Origin-Host strings"),
    ("diameter", "dictionaries"): (lambda v: v is None or _is_str(v), "a folder path string"),
    ("store", "path"): (lambda v: _is_str(v) and v != "", "a folder path string"),
    ("store", "map_size"): (_number(1 << 20, 1 << 44, True), "octets, 1 MiB..16 TiB"),
    ("store", "durability"): (lambda v: v in ("fsync", "os"), "fsync or os"),
    ("store", "max_batch"): (_number(1, 100000, True), "an integer 1..100000"),
    ("store", "sync_interval"): (_number(0.001), "seconds above 0"),
    ("charging", "validity_time"): (_number(1, 2**32 - 1, True), "seconds, 1 or more"),
    ("charging", "tcc_factor"): (_number(1, 100, True), "an integer 1..100"),
    ("charging", "answer_retention"): (_number(0, None, True), "seconds, 0 or more"),
    ("charging", "sweep_interval"): (_number(0.01), "seconds, at least 0.01"),
    ("charging", "notice_interval"): (_number(0.01), "seconds, at least 0.01"),
    ("charging", "max_pending"): (_number(1, 10**7, True), "an integer 1..10000000"),
    ("master", "url"): (lambda v: _is_str(v) and v.startswith(("sqlite:", "postgresql://", "postgres://")),
                        "sqlite:PATH or postgresql://..."),
    ("em", "poll_interval"): (_number(0.01), "seconds, at least 0.01"),
    ("em", "batch"): (_number(1, 100000, True), "an integer 1..100000"),
    ("brm", "poll_interval"): (_number(0.01), "seconds, at least 0.01"),
    ("brm", "batch"): (_number(1, 100000, True), "an integer 1..100000"),
    ("brm", "snapshot_interval"): (_number(0), "seconds, 0 (never) or more"),
    ("brm", "auto_bill"): (lambda v: isinstance(v, bool), "true or false"),
    ("brm", "invoice_dir"): (lambda v: _is_str(v) and v != "", "a folder path string"),
    ("metrics", "listen"): (lambda v: v == "" or _is_listen(v), "\"HOST:PORT\" or \"\" (off)"),
    ("metrics", "interval"): (_number(0.05, 3600), "seconds, 0.05..3600"),
    ("log", "level"): (lambda v: v in ("debug", "info", "warning", "error"), "debug, info, warning or error"),
    ("log", "format"): (lambda v: v in ("text", "json"), "text or json"),
}


def _section(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table")
    names = {f.name for f in attrs.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{where}]: {', '.join(sorted(unknown))}")
    out = {}
    for name, v in values.items():
        out[name] = tuple(v) if isinstance(v, list) else v
    return cls(**out)


def validate(config: Config) -> Config:
    """Every setting against its rule; the first bad one is a ConfigError."""
    for section in _SECTIONS:
        obj = getattr(config, section)
        for f in attrs.fields(type(obj)):
            test, what = _RULES[(section, f.name)]
            v = getattr(obj, f.name)
            if not test(v):
                raise ConfigError(f"[{section}] {f.name} = {v!r}: expected {what}")
            if isinstance(f.default, float) and isinstance(v, int):
                obj = attrs.evolve(obj, **{f.name: float(v)})
        config = attrs.evolve(config, **{section: obj})
    return config


def from_dict(data: dict[str, Any]) -> Config:
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    return validate(Config(**{name: _section(cls, data.get(name, {}), name)
                              for name, cls in _SECTIONS.items()}))


def load_config(path: str | None) -> Config:
    if path is None:
        return validate(Config())
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
    return validate(attrs.evolve(config, **{section: attrs.evolve(getattr(config, section), **given)}))
