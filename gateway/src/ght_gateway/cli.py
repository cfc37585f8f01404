"""Operator commands of the gateway.

``python -m ght_gateway.cli create-admin --username NAME [--display-name TEXT]``
creates the first administrator of a production gateway (which has no demo
user). The password is read from the terminal, or from standard input when it
is not a terminal (``--password-stdin``-style, for automation), never from the
command line where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence

from pydantic import TypeAdapter, ValidationError

from ght_gateway import identity
from ght_gateway.schemas import Password, Username
from ght_gateway.settings import Settings
from ght_shared.audit import record_audit
from ght_shared.auth import TERRITORY, Role
from ght_shared.db import Database
from ght_shared.errors import DomainError


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password (12 characters or more): ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("error: the two passwords differ")
    return first


async def create_admin(settings: Settings, username: str, display_name: str, password: str) -> None:
    database = Database(settings)
    try:
        async with database.transaction() as session:
            await identity.create_user(
                session,
                username=username,
                display_name=display_name,
                password=password,
                roles=[Role.ADMIN.value],
                establishments=[TERRITORY],
            )
            await record_audit(session, "cli", "user.created", f"user/{username}")
    finally:
        await database.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ght_gateway.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    admin = commands.add_parser("create-admin", help="create an administrator")
    admin.add_argument("--username", required=True)
    admin.add_argument("--display-name", default="Administrateur")
    args = parser.parse_args(argv)

    try:
        username = TypeAdapter(Username).validate_python(args.username)
        password = TypeAdapter(Password).validate_python(_read_password())
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    try:
        asyncio.run(create_admin(Settings(), username, args.display_name, password))
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(f"administrator {username!r} created")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
