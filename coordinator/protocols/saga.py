"""Cross-shard transfers by an orchestrated Saga, a batch at a time.

  1. Debit on the debit shard (money leaves at once: a visible intermediate state) and
     the phase-state row, in one local transaction.        (branch_flow.apply_batch)
  2. Credit on the credit shard.
  3. On the debit shard: if the credit was refused (the receiver is frozen, say), the
     compensation credits the sender back; either way the phase state is done and the
     transfer's record written, in one local transaction.
A Saga only moves forward: a credit whose outcome is unknown (its shard is down) is
repeated, by the client's retry or by recovery, until it lands or is refused; the
barrier makes the repeats safe.
"""

from __future__ import annotations

import logging

from coordinator.protocols.branch_flow import BranchFlow, Flow, decided_before, decision_after
from core.domain.outcomes import Outcome, Refused, Reroute
from core.runtime import fault_points
from core.runtime.logs import log_phase

log = logging.getLogger("wallet.saga")


class SagaCoordinator(BranchFlow):
    mode = "saga"

    async def drive(self, flows: list[Flow]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        decisions = decided_before(flows)
        for flow, credited in await self.try_credits([f for f in flows if not f.second_phase]):
            if isinstance(credited, (Refused, Reroute)):
                outcomes[flow.transfer.transaction_id] = credited  # unknown: finish later
            else:
                decisions.append(decision_after(flow, credited))
        log_phase(log, "saga.credited", [d.transfer.transaction_id for d in decisions])
        fault_points.reach("saga.after_credit")
        for decision, result in await self.decide_debits(decisions, final_state="done"):
            outcomes[decision.transfer.transaction_id] = result
        log_phase(
            log,
            "saga.finished",
            [d.transfer.transaction_id for d in decisions],
            compensated=sum(1 for d in decisions if d.wanted == "cancel"),
        )
        return outcomes
