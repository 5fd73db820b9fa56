"""Settings from the environment, each with a safe default for the embedded local setup."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.domain import MODES
from coordinator.group_commit import BatchLimits


LOG_LEVELS = ("debug", "info", "warning", "error")


WORKERS_MAX = 32


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _file_text(name: str) -> str | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return Path(raw).read_text()
    except OSError as error:
        raise SystemExit(f"{name}: cannot read {raw}: {error}") from None


@dataclass(frozen=True)
class Settings:
    home: Path = Path(".wallet")
    topology_path: Path = Path(".wallet/topology.json")
    host: str = "127.0.0.1"
    port: int = 8000
    default_mode: str = "2pc"
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

    def __post_init__(self) -> None:
        assert self.default_mode in MODES, f"WALLET_MODE must be one of {MODES}"
        assert self.zk_root.startswith("/") and not self.zk_root.endswith("/"), "WALLET_ZK_ROOT must look like /wallet"
        assert 2_000 <= self.zk_session_timeout_ms <= 60_000, "WALLET_ZK_SESSION_TIMEOUT_MS must be 2000..60000"
        assert 1 <= self.workers <= WORKERS_MAX, f"WALLET_WORKERS must be 1..{WORKERS_MAX}"
        assert self.rate_per_s > 0 and self.rate_burst >= 1, "WALLET_RATE_PER_S must be > 0 and WALLET_RATE_BURST >= 1"
        assert self.admin_rate_per_s > 0 and self.admin_rate_burst >= 1, "admin rates must be positive"
        assert self.log_format in ("json", "text"), "WALLET_LOG_FORMAT must be json or text"
        assert self.log_level in LOG_LEVELS, f"WALLET_LOG_LEVEL must be one of {LOG_LEVELS}"

    @classmethod
    def from_environment(cls) -> Settings:
        home = Path(os.environ.get("WALLET_HOME", ".wallet"))
        return cls(
            home=home,
            topology_path=Path(os.environ.get("WALLET_TOPOLOGY", home / "topology.json")),
            host=os.environ.get("WALLET_HOST", "127.0.0.1"),
            port=_int("WALLET_PORT", 8000),
            default_mode=os.environ.get("WALLET_MODE", "2pc"),
            pool_size_max=_int("WALLET_POOL_SIZE_MAX", 16),
            zk_hosts=os.environ.get("WALLET_ZK_HOSTS") or None,
            zk_root=os.environ.get("WALLET_ZK_ROOT", "/wallet"),
            zk_session_timeout_ms=_int("WALLET_ZK_SESSION_TIMEOUT_MS", 10_000),
            workers=_int("WALLET_WORKERS", 1),
            auth_secret=os.environ.get("WALLET_AUTH_SECRET") or None,
            auth_public_key=_file_text("WALLET_AUTH_PUBLIC_KEY_FILE"),
            rate_per_s=_int("WALLET_RATE_PER_S", 50),
            rate_burst=_int("WALLET_RATE_BURST", 100),
            admin_rate_per_s=_int("WALLET_ADMIN_RATE_PER_S", 20_000),
            admin_rate_burst=_int("WALLET_ADMIN_RATE_BURST", 40_000),
            log_format=os.environ.get("WALLET_LOG_FORMAT", "json"),
            log_level=os.environ.get("WALLET_LOG_LEVEL", "info"),
            run_relay=os.environ.get("WALLET_RELAY", "on") != "off",
            limits=BatchLimits(
                batch_size_max=_int("WALLET_BATCH_SIZE_MAX", 1000),
                batch_wait_ms=_int("WALLET_BATCH_WAIT_MS", 0),
                workers=_int("WALLET_BATCH_WORKERS", 2),
            ),
        )
