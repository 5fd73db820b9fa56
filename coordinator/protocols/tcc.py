"""Cross-shard transfers by TC/C (Try-Confirm/Cancel), a batch at a time.

  1. Try on the debit shard: hold the amount (available down, reserved up) and write the
     phase-state row, in one local transaction.           (branch_flow.apply_batch)
  2. Try on the credit shard: the receiver exists, is active, takes this currency. No
     balance changes.
  3. Decide on the debit shard, under the phase-state row lock: Confirm if both Trys
     succeeded, else Cancel. The first writer of the decision wins (coordinator or
     recovery). In the same local transaction: Confirm (debit from the hold) or Cancel
     (release the hold) of the debit branch, and the transfer's record.
  4. Confirm (credit) or Cancel (nothing to undo) on the credit shard.
  5. Mark the phase state done.
A Try on the credit shard that cannot be reached counts as failed: Cancel is always
safe, because the credit-side Try changes nothing. Confirm and Cancel cannot fail for
business reasons; when a shard is down, recovery repeats them until they land.
"""

from __future__ import annotations

import logging

from coordinator.protocols import branch_steps
from coordinator.protocols.branch_flow import BranchFlow, Flow, decided_before, decision_after
from core.domain.branch_plan import BranchOp, SecondPhase
from core.domain.outcomes import Outcome, Refused, Reroute
from core.domain.transfers import Transfer
from core.runtime import fault_points
from core.runtime.logs import log_phase

log = logging.getLogger("wallet.tcc")


class TccCoordinator(BranchFlow):
    mode = "tcc"

    async def drive(self, flows: list[Flow]) -> dict[str, Outcome]:
        decisions = decided_before(flows)
        outcomes: dict[str, Outcome] = {}
        for flow, tried in await self.try_credits([f for f in flows if not f.second_phase]):
            if isinstance(tried, Reroute):
                # The receiver's slot moved: nothing was tried; the caller routes again and
                # this flow resumes from its phase state (a refusal is not a failure).
                outcomes[flow.transfer.transaction_id] = tried
            elif isinstance(tried, Refused):  # the credit shard did not answer: Cancel is always safe
                decisions.append(branch_steps.Decision(flow.transfer, "cancel", "transfer_aborted", False))
            else:
                decisions.append(decision_after(flow, tried))

        log_phase(log, "tcc.tried_credit", [d.transfer.transaction_id for d in decisions])
        fault_points.reach("tcc.after_try_credit")
        decided: list[tuple[branch_steps.Decision, SecondPhase]] = []
        for decision, result in await self.decide_debits(decisions, final_state="sent"):
            outcomes[decision.transfer.transaction_id] = result
            if not isinstance(result, (Refused, Reroute)):
                decided.append((decision, "confirm" if result.status == "success" else "cancel"))

        log_phase(
            log,
            "tcc.decided",
            [d.transfer.transaction_id for d, _ in decided],
            confirmed=sum(1 for _, phase in decided if phase == "confirm"),
        )
        fault_points.reach("tcc.after_decision")
        finished = await self.per_shard(
            decided,
            lambda item: self.credit_shard(item[0].transfer),
            lambda shard, group: branch_steps.run_branch_ops(
                self.shards, shard, [BranchOp(d.transfer, "credit", phase) for d, phase in group]
            ),
        )
        log_phase(log, "tcc.finished_credit", [item[0].transfer.transaction_id for item, _ in finished])
        fault_points.reach("tcc.after_confirm_credit")
        # A credit branch not finished now stays 'sent' in phase state: recovery repeats it.
        done = [item[0].transfer for item, answer in finished if not isinstance(answer, (Refused, Reroute))]
        await self.per_shard(done, self.debit_shard, self._mark_done)
        return outcomes

    async def _mark_done(self, shard: str, transfers: list[Transfer]) -> list[Transfer]:
        return await branch_steps.mark_done(self.shards, shard, transfers)
