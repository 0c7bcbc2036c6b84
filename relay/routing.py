"""Which sinks an event goes to: its type against each sink's `events` globs, its source
against the sink's `sources` (when listed)."""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from relay.config.types import SinkConfig


def sink_wants(config: SinkConfig, event_type: str, source: str) -> bool:
    if config.sources is not None and source not in config.sources:
        return False
    return any(fnmatchcase(event_type, pattern) for pattern in config.events)


def route(sinks: Mapping[str, SinkConfig], event_type: str, source: str) -> list[str]:
    return [name for name, config in sinks.items() if sink_wants(config, event_type, source)]
