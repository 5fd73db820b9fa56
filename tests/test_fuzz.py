"""Schemathesis against the real app on real shards: no 500, every response fits the
OpenAPI document, and money is still conserved afterwards."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from uuid import uuid4

import hypothesis
import schemathesis
from schemathesis.core.result import Err
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation.hypothesis.builder import add_examples
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from coordinator.api.app import build_app
from coordinator.runtime.settings import Settings
from coordinator.domain.money import parse_amount
from coordinator.service.wallet import WalletService
from shard_router.topology import Topology
from shards import two_phase as two_phase_sql
from tests.helpers import bearer

# Bounded: the whole run stays well under a minute.
EXAMPLES_PER_OPERATION = 25
EXAMPLE_ACCOUNTS = ("alice", "bob")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


async def money_state(topology: Topology, settings: Settings, open_examples: bool = False) -> tuple[int, int, int]:
    """(balances summed, reserved summed, prepared branches) once recovery has run."""
    async with WalletService(topology, settings) as service:
        if open_examples:  # the document's examples name alice and bob: make them real, with money
            for account_id in EXAMPLE_ACCOUNTS:
                await service.create_account(account_id, account_id, "USD")
                await service.deposit(account_id, "1000.00", str(uuid4()))
        await service.recover(abort_after_ms=0)
        balance, reserved, _ = await service.totals()
        prepared = 0
        for shard in sorted(topology.shards):
            async with service.pools.connection(shard) as connection:
                prepared += len(await two_phase_sql.select_prepared(connection))
        return balance, reserved, prepared


def test_fuzz_api_against_its_openapi_document(topology: Topology, settings: Settings) -> None:
    """Every operation, generated inputs (explicit examples first), an admin's token."""
    settings = replace(settings, run_relay=True)
    app = build_app(settings)  # its lifespan opens the service on schemathesis' event loop
    admin = bearer()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=admin)
    start_balance, _, _ = asyncio.run(money_state(topology, settings, open_examples=True))
    deposited: dict[str, int] = {}
    moved: list[str] = []
    try:
        for operation_result in schema.get_all_operations():
            if isinstance(operation_result, Err):
                raise operation_result.err()
            operation = operation_result.ok()

            @hypothesis.given(case=operation.as_strategy())
            @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                                 phases=[Phase.explicit, Phase.generate],
                                 suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                response = case.call(headers=admin)
                case.validate_response(response, checks=CHECKS)
                if case.path.endswith("/deposits") and response.status_code == 200:
                    body = response.json()
                    deposited[body["transaction_id"]] = parse_amount(body["amount"], body["currency"])
                if case.path == "/v1/wallet/balance_transfer" and response.status_code == 200:
                    moved.append(response.json()["transaction_id"])

            add_examples(run, operation, fill_missing=True)()  # the document's examples first
    finally:
        asgi.shutdown_lifespans()
    end_balance, end_reserved, prepared = asyncio.run(money_state(topology, settings))
    assert end_reserved == 0 and prepared == 0, "a hold or a prepared branch was left behind"
    assert end_balance == start_balance + sum(deposited.values()), "money appeared or vanished"
    assert moved, "no generated transfer moved money: the examples no longer reach real accounts"
