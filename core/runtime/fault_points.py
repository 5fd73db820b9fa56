"""Named protocol steps where a test can kill this process (SIGKILL), deterministically.

A coordinator started with WALLET_FAULT_POINT=<name> (read by Settings, armed by whoever
starts the process: `wallet` and the app) dies at once when the protocol reaches that
step, as it would on a power cut. Disarmed, `reach` costs one comparison.
"""

from __future__ import annotations

import os
import signal

# Steps of the service itself (`wallet serve`: the protocols and the relay), which a chaos run
# reaches under its ordinary load.
SERVING_FAULT_POINTS = frozenset(
    {
        "2pc.after_writes",
        "2pc.after_first_prepare",
        "2pc.after_all_prepares",
        "2pc.after_decision",
        "2pc.after_first_commit",
        "tcc.after_try_debit",
        "tcc.after_try_credit",
        "tcc.after_decision",
        "tcc.after_confirm_credit",
        "saga.after_debit",
        "saga.after_credit",
        "relay.after_ledger_commit",
    }
)
# Steps of an operator's command (`wallet topology move-stream`), which no load reaches: its
# tests kill the command at each (tests/test_ledger_partitions.py).
OPERATOR_FAULT_POINTS = frozenset(
    {
        "stream_move.after_fence",
        "stream_move.after_copy",
        "stream_move.after_route",
    }
)
FAULT_POINTS = SERVING_FAULT_POINTS | OPERATOR_FAULT_POINTS

_armed: str | None = None


def arm(name: str | None) -> None:
    """This process dies at `name` from now on (None: nowhere). Settings checked the name."""
    global _armed
    assert name is None or name in FAULT_POINTS, f"unknown fault point {name!r}"
    _armed = name


def reach(name: str) -> None:
    assert name in FAULT_POINTS, f"unknown fault point {name!r}"
    if _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
