"""The inbound request: a webhook as received, shared by the ingress, the queue and the providers.

Its own module so that what only stores or reads requests (relay.queue) does not load the
eight provider modules to get this one type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class InboundRequest:
    """A webhook as received: the raw body and what verification and normalization need."""

    source: str
    body: bytes
    headers: Mapping[str, str]  # lower-case names
    client_ip: str = ""
    received_at: float = 0.0  # Unix seconds
    token: str | None = None  # the /hooks/{source}/{token} path segment
    method: str = "POST"

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())
