"""The `relay` command: one module per command group, each registered by one line in COMMANDS.

A command module has `add_parser(sub)`, which adds its argparse subparser with the function
that runs it (`relay.cli.common.add_command`), and that function. What they share (config
loading, finding Redis, exit codes, the event loop) is relay.cli.common. Every import of the
relay's machinery stays inside the functions, so `relay --help` starts fast.
"""

from __future__ import annotations

import argparse

from relay import __version__
from relay.cli import (
    check_config,
    completion,
    dev,
    dlq,
    events,
    payments,
    reconcile,
    rejections,
    replay,
    serve,
    sinks,
    status,
    trigger,
    worker,
)

# The command modules, in the order `relay --help` lists them.
COMMANDS = (
    serve,
    worker,
    dev,
    check_config,
    status,
    events,
    payments,
    replay,
    reconcile,
    sinks,
    dlq,
    rejections,
    trigger,
    completion,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="payrelay: a webhook relay for crypto payment processors"
    )
    parser.add_argument("--version", action="version", version=f"payrelay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    parser.set_defaults(root_parser=parser)  # `relay completion` walks it (no import cycle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
