"""Accounts: open, read, freeze; each routed by the current topology and routed again when a
shard says the account lives elsewhere now."""

from __future__ import annotations

from coordinator.service.routing import Router
from core.domain.accounts import Account, AccountStatus
from core.domain.errors import WalletError
from core.runtime.fan_out import fan_out
from shards import accounts as account_sql
from shards.errors import AccountsMoved
from shards.pool import ShardPools


class Accounts:
    def __init__(self, router: Router, pools: ShardPools) -> None:
        self.router = router
        self.pools = pools

    async def create(self, account_id: str, owner: str, currency: str) -> tuple[Account, bool]:
        """(account, created). Creating the same account twice is a no-op; a different one is
        a conflict. The arguments are validated (domain/validation.py)."""

        async def attempt() -> tuple[Account, bool]:
            topology = self.router.topology
            shard = topology.shard_of(account_id)
            async with self.pools.connection(shard) as connection:
                account = await account_sql.insert_account(
                    connection, account_id, owner, currency, account_id in topology.overrides
                )
                if account is not None:
                    return account, True
                existing = await account_sql.select_account(connection, account_id)
            if existing is None:  # accounts are never deleted: the shard does not own the slot
                raise AccountsMoved([account_id])
            return existing, False

        account, created = await self.router.rerouting(attempt)
        if not created and (account.owner != owner or account.currency != currency):
            raise WalletError("account_exists", f"account {account_id} already exists with other details")
        return account, created

    async def get(self, account_id: str) -> Account:
        async def attempt() -> Account | None:
            async with self.pools.connection(self.router.shard_of(account_id)) as connection:
                return await account_sql.select_account(connection, account_id)

        account = await self.router.rerouting(attempt)
        if account is None:
            raise WalletError("account_not_found", f"account {account_id} does not exist")
        return account

    async def set_status(self, account_id: str, status: AccountStatus) -> Account:
        assert status in ("active", "frozen"), "status is active or frozen"

        async def attempt() -> Account | None:
            async with self.pools.connection(self.router.shard_of(account_id)) as connection:
                updated = await account_sql.update_account_status(connection, account_id, status)
                if updated is not None:
                    return updated
                # No such account (None), or not served here (select_account raises), or it
                # became live here just now (route again).
                if await account_sql.select_account(connection, account_id) is not None:
                    raise AccountsMoved([account_id])
                return None

        account = await self.router.rerouting(attempt)
        if account is None:
            raise WalletError("account_not_found", f"account {account_id} does not exist")
        return account

    async def totals(self) -> tuple[int, int, int]:
        """(sum of balances, sum of reserved, accounts) over every shard. Not a snapshot:
        read it when no transfer is in flight."""

        async def one(shard: str) -> tuple[int, int, int]:
            async with self.pools.connection(shard) as connection:
                return await account_sql.sum_balances(connection)

        sums = await fan_out(self.router.shards(), one)
        sums.raise_first()
        return (
            sum(s[0] for s in sums.results.values()),
            sum(s[1] for s in sums.results.values()),
            sum(s[2] for s in sums.results.values()),
        )
