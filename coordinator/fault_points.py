"""Named protocol steps where a test can kill this process (SIGKILL), deterministically.

Set WALLET_FAULT_POINT=<name> in a coordinator's environment; when the protocol
reaches that step, the process dies at once, as it would on a power cut. Unset,
`reach` costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

FAULT_POINTS = frozenset({
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
})

_armed = os.environ.get("WALLET_FAULT_POINT")
assert _armed is None or _armed in FAULT_POINTS, f"WALLET_FAULT_POINT must be one of {sorted(FAULT_POINTS)}"


def reach(name: str) -> None:
    assert name in FAULT_POINTS, f"unknown fault point {name!r}"
    if _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
