"""`relay check-config [PATH]`: validate; a summary and exit 0, or every error and exit 2."""

from __future__ import annotations

import argparse

from relay.cli.common import CONFIG_HELP, Subcommands, add_command, load


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "check-config", run, "validate the config; exit 2 on errors")
    parser.add_argument("path", nargs="?", help=CONFIG_HELP)


def run(args: argparse.Namespace) -> int:
    loaded = load(args.path)
    config = loaded.config
    print(
        f"{loaded.path}: OK: {len(config.sources)} source(s) "
        f"({', '.join(config.sources) or 'none'}), {len(config.sinks)} sink(s) "
        f"({', '.join(config.sinks) or 'none'})"
    )
    return 0
