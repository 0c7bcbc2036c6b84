"""`relay payments show QUERY [--source S]`: a payment's timeline (SPEC 9).

QUERY is a payment id, a merchant reference or a transaction hash (an `evt_` or `in_` id works
too). The text gives the payment, then its events in the order the relay accepted them, each
with every sink's state and attempts; `--json` prints relay.operator.payments_show's answer.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from relay.cli.common import Subcommands, add_command
from relay.cli.events import (
    INDENT,
    OPTIONAL,
    add_config,
    add_json,
    amount,
    delivery_lines,
    labelled,
    operate,
    pack,
    print_json,
    print_lines,
    when,
)

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "payments", run, "a payment's timeline: its events and deliveries")
    add_config(parser)
    actions = parser.add_subparsers(dest="payments_command", required=True, metavar="ACTION")
    q = actions.add_parser(
        "show",
        help="QUERY: a payment id, a merchant reference or a transaction hash",
        description="A payment's events in the order accepted, each with every sink's "
        "state and attempts. QUERY: a payment id, a merchant reference or a transaction hash.",
    )
    q.add_argument("query", metavar="QUERY")
    q.add_argument("--source", metavar="S", help="only this source's payments")
    add_json(q)
    add_config(q, inner=True)


def run(args: argparse.Namespace) -> int:
    return operate(args, "payments show", lambda redis, loaded: _show(redis, loaded, args))


async def _show(redis: Any, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from relay import operator

    found = await operator.payments_show(redis, loaded.config, args.query, args.source)
    if args.json:
        print_json(found)
        return 0
    payments = found["payments"]
    lines: list[str] = []
    if len(payments) > 1:
        lines += [f"{len(payments)} payments match {found['query']!r}", ""]
    for i, payment in enumerate(payments):
        if i:
            lines.append("")
        lines += timeline_lines(payment)
    print_lines(lines)
    return 0


def timeline_lines(payment: dict[str, Any]) -> list[str]:
    """The payment (its latest amount and transaction hash), then each event, oldest first."""
    events = payment["events"]
    latest: dict[str, Any] = {}
    for event in events:  # the newest value of each field that any event gave
        latest.update({k: v for k, v in event["payment"].items() if v is not None})
    lines = pack(["payment", payment["payment_id"] or "(no payment id)"])
    for label, value in (
        ("source", payment["source"]),
        ("reference", payment["reference"]),
        ("status", payment["status"]),
        ("amount", amount(latest)),
        ("tx hash", latest.get("tx_hash")),
        ("events", f"{len(events)}, in the order accepted"),
    ):
        if value is not None or label not in OPTIONAL:
            lines += labelled(label, value)
    for event in events:
        lines.append("")
        lines += pack([when(event["accepted_at"]), event["type"], event["id"]])
        if event["payment"]["amount"] is not None and amount(event["payment"]) != amount(latest):
            lines.append(INDENT + f"amount {amount(event['payment'])}")
        if not event["deliveries"]:
            lines.append("  no sink routed")
        for delivery in event["deliveries"]:
            lines += delivery_lines(delivery)
    return lines
