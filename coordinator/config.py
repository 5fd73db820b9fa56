"""Settings from the environment, each with a safe default for the embedded local setup."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.domain import MODES
from coordinator.group_commit import BatchLimits


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


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

    def __post_init__(self) -> None:
        assert self.default_mode in MODES, f"WALLET_MODE must be one of {MODES}"
        assert self.zk_root.startswith("/") and not self.zk_root.endswith("/"), "WALLET_ZK_ROOT must look like /wallet"
        assert 2_000 <= self.zk_session_timeout_ms <= 60_000, "WALLET_ZK_SESSION_TIMEOUT_MS must be 2000..60000"

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
            limits=BatchLimits(
                batch_size_max=_int("WALLET_BATCH_SIZE_MAX", 1000),
                batch_wait_ms=_int("WALLET_BATCH_WAIT_MS", 0),
                workers=_int("WALLET_BATCH_WORKERS", 2),
            ),
        )
