"""structlog setup: one JSON object per line on stdout, with secrets redacted.

`LOG_FORMAT=console` prints the same lines for people instead (time, level, event, key=value;
`relay dev` sets it when its output is a terminal); JSON stays the default everywhere else.

Redaction is defence in depth: code never logs headers or secrets on purpose, and this last
processor also replaces any configured secret (and anything after `whsec_`) wherever it appears,
and cuts every URL in every string value to its host and every query value to `…` by the URL's
structure (relay.redact), so a URL spelled otherwise than in the config (`HTTP://…`, encoded) or
one from a payload is covered too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import orjson
import structlog

from relay.redact import REDACTED, known, redact

_SIGNATURE_LIKE = re.compile(r"whsec_[A-Za-z0-9+/=]+")


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        self.secrets = known(secrets)  # longest first: one containing another goes whole

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            value = redact(value, self.secrets)
            return _SIGNATURE_LIKE.sub(REDACTED, value) if "whsec_" in value else value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> Mapping[str, Any]:
        return {key: self.scrub(value) for key, value in event_dict.items()}


REDACTOR = Redactor()


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def renderer_for(log_format: str | None = None) -> Any:
    """JSON (the default), or `console`: human lines, coloured on a terminal."""
    chosen = (log_format if log_format is not None else os.environ.get("LOG_FORMAT", "")).lower()
    if chosen == "console":
        return structlog.dev.ConsoleRenderer(
            colors=sys.stdout.isatty() and "NO_COLOR" not in os.environ
        )
    return structlog.processors.JSONRenderer(serializer=_dumps)


def configure(secrets: Iterable[str] = (), level: str = "INFO", process: str | None = None) -> None:
    """JSON lines on stdout for structlog and for the stdlib loggers (arq, aiohttp); human
    lines with LOG_FORMAT=console."""
    REDACTOR.update(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if process:
        structlog.contextvars.bind_contextvars(process=process)
    renderer = renderer_for()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, REDACTOR, renderer],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                REDACTOR,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per webhook is noise


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
