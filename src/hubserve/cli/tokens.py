"""`hubserve token`: create, list and revoke access tokens and AWS key pairs."""

from __future__ import annotations

import argparse

from hubserve.cli.output import print_json
from hubserve.client import Client


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="manage access tokens and AWS keys")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="a bearer token, or an AWS key pair (shown once)")
    create.add_argument("token_name")
    create.add_argument("--endpoint", action="append", help="limit the token to this endpoint (repeatable)")
    create.add_argument("--aws", action="store_true",
                        help="an AWS access key for SigV4 clients (boto3, the AWS CLI, the sagemaker SDK), printed "
                             "as AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines")
    create.add_argument("--admin", action="store_true", help="control-plane rights (and so every endpoint)")
    token_commands.add_parser("list")
    token_commands.add_parser("revoke", help="revoke a token or an AWS key (by id)").add_argument("token_id")


def cmd_token(args: argparse.Namespace, client: Client) -> None:
    if args.token_command == "create":
        created = client.create_token(args.token_name, args.endpoint or None, aws=args.aws, admin=args.admin)
        if args.aws:  # ready for `export $(hubserve token create NAME --aws)` or a .env file
            print(f"AWS_ACCESS_KEY_ID={created['access_key_id']}")
            print(f"AWS_SECRET_ACCESS_KEY={created['secret_access_key']}")
        else:
            print_json(created)
    elif args.token_command == "list":
        print_json(client.list_tokens())
    else:
        client.revoke_token(args.token_id)
        print(f"revoked {args.token_id}")
