"""`wallet token issue`: a signed bearer token for the API."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coordinator.api.auth import (
    ASYMMETRIC_ALGORITHMS,
    SCOPES,
    TOKEN_TTL_S_DEFAULT,
    TOKEN_TTL_S_MAX,
    issue_token,
    load_secret,
    secret_path,
)
from core.domain.errors import ConfigurationError
from core.domain.validation import check_owner
from core.runtime.settings import Settings


def command_token_issue(args: argparse.Namespace, settings: Settings) -> int:
    """HS256 with the deployment's secret, or, given --private-key, an asymmetric token."""
    scope = "admin" if args.admin else "user"
    check_owner(args.owner)
    ttl_s = int(args.ttl_hours * 3600)
    if not 0 < ttl_s <= TOKEN_TTL_S_MAX:
        raise ConfigurationError(f"--ttl-hours must be in (0, {TOKEN_TTL_S_MAX // 3600}], got {args.ttl_hours}")
    if args.private_key:
        try:
            key = Path(args.private_key).read_text()
        except OSError as error:
            raise ConfigurationError(f"--private-key: cannot read {args.private_key}: {error.strerror}") from None
        token = issue_token(key, args.owner, scope, ttl_s, algorithm=args.algorithm)
    else:
        secret = load_secret(settings)
        if secret is None:
            raise ConfigurationError(
                f"no token secret: set WALLET_AUTH_SECRET or run `wallet dev up` "
                f"(it keeps one in {secret_path(settings.home)})"
            )
        token = issue_token(secret, args.owner, scope, ttl_s)
    print(token)
    return 0


def add_commands(commands: Any) -> None:
    token = commands.add_parser("token", help="bearer tokens for the API")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_commands.add_parser("issue", help="print a signed token for an owner (scope user, or --admin)")
    issue.add_argument("--owner", required=True, help="the owner the token acts for (as on its accounts)")
    issue.add_argument("--admin", action="store_true", help=f"scope admin (default user); scopes: {', '.join(SCOPES)}")
    issue.add_argument("--ttl-hours", type=float, default=TOKEN_TTL_S_DEFAULT / 3600, help="lifetime (default 30 days)")
    issue.add_argument(
        "--private-key",
        help="sign with this PEM private key (asymmetric; the API then needs WALLET_AUTH_PUBLIC_KEY_FILE)",
    )
    issue.add_argument(
        "--algorithm", default="RS256", choices=ASYMMETRIC_ALGORITHMS, help="with --private-key (default RS256)"
    )
    issue.set_defaults(handler=command_token_issue)
