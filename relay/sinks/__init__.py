"""The sink registry: one module per sink type, one line here each."""

from __future__ import annotations

from relay.sinks import discord, http, log, slack
from relay.sinks.base import Delivered, Failed, Outcome, RetryLater, Sink

SINKS: dict[str, type[Sink]] = {
    cls.kind: cls
    for cls in (
        log.LogSink,
        http.HttpSink,
        discord.DiscordSink,
        slack.SlackSink,
    )
}

__all__ = ["SINKS", "Delivered", "Failed", "Outcome", "RetryLater", "Sink"]
