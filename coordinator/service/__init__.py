"""WalletService and its parts: routing, group commit, prior-record lookups, accounts,
submission, status. The one place the layers below are put together."""
