"""`fleetstream dev`: start, stop and inspect the local servers.

    fleetstream dev up [NAME...]     # all, or the named ones (and what they require)
    fleetstream dev down [NAME...]   # all, or the named ones
    fleetstream dev status
    fleetstream dev logs NAME [-n LINES]

`add_dev_parser(subparsers)` adds the `dev` command to an argparse CLI; this
module also runs alone: `python -m fleetstream.dev.cli dev up kafka`.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from fleetstream.dev.registry import SERVICES
from fleetstream.dev.service import Service, ServiceError


def start_order(names: Sequence[str]) -> list[str]:
    """`names` plus the services they require, in registry (start) order."""
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        raise ServiceError(f"unknown service(s) {', '.join(unknown)}; "
                           f"known: {', '.join(SERVICES)}")
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(getattr(SERVICES[name](), "requires", ()))
    return [name for name in SERVICES if name in wanted]


def up(names: Sequence[str]) -> None:
    """Start the named services (all when none) in dependency order."""
    for name in start_order(names or list(SERVICES)):
        service = SERVICES[name]()
        began = time.monotonic()
        service.start()
        print(f"{name:<12} ready in {time.monotonic() - began:5.1f} s  (port {service.port})")


def down(names: Sequence[str]) -> None:
    """Stop the named services (all when none), last started first."""
    for name in reversed(start_order(names or list(SERVICES))):
        SERVICES[name]().stop()
        print(f"{name:<12} stopped")


def _service(name: str) -> Service:
    if name not in SERVICES:
        raise ServiceError(f"unknown service {name}; known: {', '.join(SERVICES)}")
    return SERVICES[name]()


def _run(args: argparse.Namespace) -> int:
    try:
        if args.dev_command == "up":
            up(args.names)
        elif args.dev_command == "down":
            down(args.names)
        elif args.dev_command == "status":
            for factory in SERVICES.values():
                print(factory().status())
        else:
            print(_service(args.name).log_tail(args.lines))
    except ServiceError as error:
        print(f"fleetstream dev: {error}", file=sys.stderr)
        return 1
    return 0


def add_dev_parser(subparsers: argparse._SubParsersAction,
                   help: str = "start, stop and inspect the local servers"  # noqa: A002
                   ) -> argparse.ArgumentParser:
    """Add `dev` (up/down/status/logs) to an argparse CLI; it sets `handler` to run it."""
    dev = subparsers.add_parser("dev", help=help, description=__doc__.splitlines()[0])
    commands = dev.add_subparsers(dest="dev_command", required=True)
    names_help = f"services (default: all): {', '.join(SERVICES)}"
    commands.add_parser("up", help="start servers").add_argument("names", nargs="*",
                                                                 help=names_help)
    commands.add_parser("down", help="stop servers").add_argument("names", nargs="*",
                                                                  help=names_help)
    commands.add_parser("status", help="show which servers run")
    logs = commands.add_parser("logs", help="print the end of a server's log")
    logs.add_argument("name", choices=list(SERVICES))
    logs.add_argument("-n", "--lines", type=int, default=40)
    dev.set_defaults(handler=_run)
    return dev


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetstream")
    add_dev_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
