"""Settings: every WALLET_* variable is read here, once, into one frozen object, each with a
safe default for the embedded local setup. A value that cannot be used is refused with a
ConfigurationError naming the variable and what is allowed (never an assert: a check that
python -O removes is no check)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from core.domain.errors import ConfigurationError
from core.domain.transfers import MODES, Mode
from core.runtime.fault_points import FAULT_POINTS

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
WORKERS_MAX = 32
BATCH_SIZE_MAX = 10_000
BATCH_WAIT_MS_MAX = 100
BATCH_WORKERS_MAX = 16
POOL_SIZE_MAX = 256
ZK_SESSION_TIMEOUT_MS_RANGE = (2_000, 60_000)
# Local clusters (`wallet dev up`, `wallet serve --local`): shards, and servers of an HA shard.
LOCAL_SHARDS_MAX = 64
HA_MEMBERS_MIN, HA_MEMBERS_MAX = 2, 5


def require(condition: bool, message: str) -> None:
    """Refuse a setting: `message` names it and says what is allowed."""
    if not condition:
        raise ConfigurationError(message)


@dataclass(frozen=True)
class BatchLimits:
    batch_size_max: int = 1000
    batch_wait_ms: float = 0.0  # extra time to gather a batch once its first request arrived
    queue_size_max: int = 20_000  # submitters wait (backpressure) beyond this
    workers: int = 2  # batches in flight per shard

    def __post_init__(self) -> None:
        require(
            1 <= self.batch_size_max <= BATCH_SIZE_MAX,
            f"WALLET_BATCH_SIZE_MAX must be in 1..{BATCH_SIZE_MAX}, got {self.batch_size_max}",
        )
        require(
            0 <= self.batch_wait_ms <= BATCH_WAIT_MS_MAX,
            f"WALLET_BATCH_WAIT_MS must be in 0..{BATCH_WAIT_MS_MAX}, got {self.batch_wait_ms}",
        )
        require(
            self.queue_size_max >= self.batch_size_max,
            f"the queue ({self.queue_size_max}) must hold at least one batch ({self.batch_size_max})",
        )
        require(
            1 <= self.workers <= BATCH_WORKERS_MAX,
            f"WALLET_BATCH_WORKERS must be in 1..{BATCH_WORKERS_MAX}, got {self.workers}",
        )


@dataclass(frozen=True)
class Settings:
    home: Path = Path(".wallet")
    topology_path: Path = Path(".wallet/topology.json")
    host: str = "127.0.0.1"
    port: int = 8000
    default_mode: Mode = "2pc"
    pool_size_max: int = 16
    limits: BatchLimits = field(default_factory=BatchLimits)
    # ZooKeeper: when hosts are set, the topology and leader election live there.
    zk_hosts: str | None = None
    zk_root: str = "/wallet"
    zk_session_timeout_ms: int = 10_000
    workers: int = 1  # `wallet serve` processes sharing the port
    # Bearer tokens: HS256 with this secret (None: $WALLET_HOME/auth-secret), or, with a
    # public key (PEM), asymmetric tokens (RS256, ES256, EdDSA) checked against it.
    auth_secret: str | None = None
    auth_public_key: str | None = None
    # Requests per second per token, with a burst; admin tokens (operators, benchmarks) get more.
    rate_per_s: float = 50.0
    rate_burst: int = 100
    admin_rate_per_s: float = 20_000.0
    admin_rate_burst: int = 40_000
    log_format: str = "json"
    log_level: str = "info"
    run_relay: bool = True  # relay outboxes to the ledger inside `wallet serve` (off: a separate relay)
    fault_point: str | None = None  # tests and chaos only: the step where this process kills itself
    # Ledger checkpoints (ledger/anchors.py): the Ed25519 key that signs them (None:
    # $WALLET_HOME/ledger-signing-key.pem), the append-only file they go to (None:
    # $WALLET_HOME/ledger-anchors.jsonl), and how often the serving leader writes one (0: never).
    ledger_key_file: Path | None = None
    ledger_anchor_file: Path | None = None
    ledger_checkpoint_s: int = 60
    # How often the relay leader verifies the whole ledger and records the result (what
    # /metrics and the alert WalletLedgerVerificationStale read; 0: never, run it yourself).
    ledger_verify_s: int = 86_400
    # Tracing (runtime/tracing.py): off unless a collector's OTLP/HTTP endpoint is named
    # (http://collector:4318); then a request is traced at this ratio unless its caller's
    # traceparent already decided (a round carrying a traced request is always traced).
    otlp_endpoint: str | None = None
    trace_sample_ratio: float = 1.0

    @property
    def ledger_key_path(self) -> Path:
        return self.ledger_key_file or self.home / "ledger-signing-key.pem"

    @property
    def ledger_anchor_path(self) -> Path:
        return self.ledger_anchor_file or self.home / "ledger-anchors.jsonl"

    def __post_init__(self) -> None:
        require(self.default_mode in MODES, f"WALLET_MODE must be one of {', '.join(MODES)}, got {self.default_mode!r}")
        require(1 <= self.port <= 65535, f"WALLET_PORT must be in 1..65535, got {self.port}")
        require(
            1 <= self.pool_size_max <= POOL_SIZE_MAX,
            f"WALLET_POOL_SIZE_MAX must be in 1..{POOL_SIZE_MAX}, got {self.pool_size_max}",
        )
        require(
            self.zk_root.startswith("/") and not self.zk_root.endswith("/") and len(self.zk_root) > 1,
            f"WALLET_ZK_ROOT must be an absolute znode path such as /wallet, got {self.zk_root!r}",
        )
        low, high = ZK_SESSION_TIMEOUT_MS_RANGE
        require(
            low <= self.zk_session_timeout_ms <= high,
            f"WALLET_ZK_SESSION_TIMEOUT_MS must be in {low}..{high}, got {self.zk_session_timeout_ms}",
        )
        require(1 <= self.workers <= WORKERS_MAX, f"WALLET_WORKERS must be in 1..{WORKERS_MAX}, got {self.workers}")
        for name, rate in (("WALLET_RATE_PER_S", self.rate_per_s), ("WALLET_ADMIN_RATE_PER_S", self.admin_rate_per_s)):
            require(
                math.isfinite(rate) and rate > 0, f"{name} must be a number above 0 (requests per second), got {rate}"
            )
        for name, burst in (("WALLET_RATE_BURST", self.rate_burst), ("WALLET_ADMIN_RATE_BURST", self.admin_rate_burst)):
            require(burst >= 1, f"{name} must be a whole number of at least 1, got {burst}")
        require(
            self.log_format in LOG_FORMATS,
            f"WALLET_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}",
        )
        require(
            self.log_level in LOG_LEVELS,
            f"WALLET_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}",
        )
        require(
            0 <= self.ledger_checkpoint_s <= 86_400,
            "WALLET_LEDGER_CHECKPOINT_S must be in 0..86400 (0: no periodic checkpoint), "
            f"got {self.ledger_checkpoint_s}",
        )
        require(
            0 <= self.ledger_verify_s <= 86_400,
            f"WALLET_LEDGER_VERIFY_S must be in 0..86400 (0: no periodic verification), got {self.ledger_verify_s}",
        )
        require(
            self.otlp_endpoint is None or self.otlp_endpoint.startswith(("http://", "https://")),
            f"WALLET_OTLP_ENDPOINT must be an http:// or https:// URL such as http://collector:4318, "
            f"got {self.otlp_endpoint!r}",
        )
        require(
            0.0 <= self.trace_sample_ratio <= 1.0,
            f"WALLET_TRACE_SAMPLE_RATIO must be in 0..1 (1: every request), got {self.trace_sample_ratio}",
        )
        require(
            self.fault_point is None or self.fault_point in FAULT_POINTS,
            f"WALLET_FAULT_POINT must be one of {', '.join(sorted(FAULT_POINTS))}, got {self.fault_point!r}",
        )

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> Settings:
        env = Environment(os.environ if environment is None else environment)
        home = Path(env.text("WALLET_HOME", ".wallet"))
        return cls(
            home=home,
            topology_path=Path(env.text("WALLET_TOPOLOGY", str(home / "topology.json"))),
            host=env.text("WALLET_HOST", "127.0.0.1"),
            port=env.integer("WALLET_PORT", 8000),
            default_mode=cast(Mode, env.text("WALLET_MODE", "2pc")),  # checked in __post_init__
            pool_size_max=env.integer("WALLET_POOL_SIZE_MAX", 16),
            zk_hosts=env.text("WALLET_ZK_HOSTS", "") or None,
            zk_root=env.text("WALLET_ZK_ROOT", "/wallet"),
            zk_session_timeout_ms=env.integer("WALLET_ZK_SESSION_TIMEOUT_MS", 10_000),
            workers=env.integer("WALLET_WORKERS", 1),
            auth_secret=env.text("WALLET_AUTH_SECRET", "") or None,
            auth_public_key=env.file_text("WALLET_AUTH_PUBLIC_KEY_FILE"),
            rate_per_s=env.number("WALLET_RATE_PER_S", 50),
            rate_burst=env.integer("WALLET_RATE_BURST", 100),
            admin_rate_per_s=env.number("WALLET_ADMIN_RATE_PER_S", 20_000),
            admin_rate_burst=env.integer("WALLET_ADMIN_RATE_BURST", 40_000),
            log_format=env.text("WALLET_LOG_FORMAT", "json"),
            log_level=env.text("WALLET_LOG_LEVEL", "info").lower(),
            run_relay=env.choice("WALLET_RELAY", ("on", "off"), "on") == "on",
            fault_point=env.text("WALLET_FAULT_POINT", "") or None,
            ledger_key_file=Path(env.text("WALLET_LEDGER_KEY_FILE", ""))
            if env.text("WALLET_LEDGER_KEY_FILE", "")
            else None,
            ledger_anchor_file=Path(env.text("WALLET_LEDGER_ANCHOR_FILE", ""))
            if env.text("WALLET_LEDGER_ANCHOR_FILE", "")
            else None,
            ledger_checkpoint_s=env.integer("WALLET_LEDGER_CHECKPOINT_S", 60),
            ledger_verify_s=env.integer("WALLET_LEDGER_VERIFY_S", 86_400),
            otlp_endpoint=env.text("WALLET_OTLP_ENDPOINT", "") or None,
            trace_sample_ratio=env.number("WALLET_TRACE_SAMPLE_RATIO", 1.0),
            limits=BatchLimits(
                batch_size_max=env.integer("WALLET_BATCH_SIZE_MAX", 1000),
                batch_wait_ms=env.number("WALLET_BATCH_WAIT_MS", 0),
                workers=env.integer("WALLET_BATCH_WORKERS", 2),
            ),
        )


class Environment:
    """Typed reads of WALLET_* variables; each refusal names the variable."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    def text(self, name: str, default: str) -> str:
        return self.values.get(name, default)

    def integer(self, name: str, default: int) -> int:
        raw = self.values.get(name)
        if raw is None:
            return default
        try:
            return int(raw.strip())
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None

    def number(self, name: str, default: float) -> float:
        raw = self.values.get(name)
        if raw is None:
            return float(default)
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigurationError(f"{name} must be a number such as 0.5 or 50, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigurationError(f"{name} must be a finite number, got {raw!r}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.values.get(name, default)
        if value not in allowed:
            raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def file_text(self, name: str) -> str | None:
        raw = self.values.get(name)
        if not raw:
            return None
        try:
            return Path(raw).read_text()
        except OSError as error:
            raise ConfigurationError(f"{name}: cannot read {raw}: {error.strerror or error}") from None
