"""What the providers' status-API clients share (SPEC 11): the answer they give the
reconciler, the errors they raise, and one HTTP call with a deadline.

Each provider module has its own `fetch_status(session, config, payment_id)` (relay.reconcile
lists them): it builds the documented request, calls `call_api` and reads the documented
answer into a `StatusAnswer`. This module sits below the provider modules and relay.reconcile,
so both import it and neither imports the other's machinery.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from relay.events import loads

# Errors, by what the scheduler does about them.
AUTH = "auth"  # credentials refused: the whole source waits, an operator must act
RATE_LIMITED = "rate_limited"  # 429: the whole source waits (Retry-After when given)
UNAVAILABLE = "unavailable"  # 5xx, timeout, network: this payment backs off
BAD_ANSWER = "bad_answer"  # 4xx other than auth, or an answer we cannot read: backs off

ANSWER_EXCERPT = 200  # characters of an error answer kept for the log and status


class ApiError(Exception):
    """A status API call that gave no usable answer. `kind` is one of the constants above;
    `retry_after` the seconds a 429 asked for (None: not said)."""

    def __init__(
        self, kind: str, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class StatusAnswer:
    """What a provider's status API says of one payment, in canonical terms.

    `type` is the canonical event type of the status (None: a status we do not map, so
    nothing is emitted), `provider_event` the status as the API wrote it, `dedupe_key` the key
    the provider's webhook of this stage would carry where the answer tells it (so that the
    reconciled event has the webhook's event id), else a key of our own. `data` is the API's
    answer, parsed with exact decimals; `payment` the canonical payment fields it gives;
    `final` that the provider sends nothing after this status (canonical finals always are)."""

    type: str | None
    provider_event: str
    dedupe_key: str
    data: Any
    payment: dict[str, Any] = field(default_factory=dict)
    occurred_at: Any = None
    final: bool = False  # the provider documents this status as its last (IVPAY's PAID)


async def call_api(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: bytes | None = None,
    timeout: float,
) -> Any:
    """One request; the answer parsed as JSON (exact decimals), or ApiError. 401/403 are
    AUTH, 429 RATE_LIMITED, 5xx and network trouble UNAVAILABLE, anything else not 2xx or
    not JSON BAD_ANSWER. Redirects are not followed (an API that moved is an error to see)."""
    try:
        async with asyncio.timeout(timeout):
            async with session.request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise ApiError(UNAVAILABLE, f"no answer: {type(exc).__name__}: {exc}"[:200]) from None
    if status in (401, 403):
        raise ApiError(AUTH, f"credentials refused (HTTP {status}): {excerpt(raw)}", status)
    if status == 429:
        raise ApiError(RATE_LIMITED, "rate limited (HTTP 429)", status, retry_after)
    if status >= 500:
        raise ApiError(UNAVAILABLE, f"HTTP {status}: {excerpt(raw)}", status)
    if not 200 <= status < 300:
        raise ApiError(BAD_ANSWER, f"HTTP {status}: {excerpt(raw)}", status)
    try:
        return loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError, ArithmeticError):
        raise ApiError(BAD_ANSWER, f"answer is not JSON: {excerpt(raw)}", status) from None


def excerpt(raw: bytes) -> str:
    """The start of an answer, on one line, for the log and status."""
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text[:ANSWER_EXCERPT] or "(empty answer)"


def _retry_after(value: str | None) -> float | None:
    # Only the seconds form: HTTP dates from a status API would be unusual.
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


def as_object(answer: Any, where: str) -> dict[str, Any]:
    """`answer` when it is a JSON object, else BAD_ANSWER naming `where`."""
    if not isinstance(answer, dict):
        raise ApiError(BAD_ANSWER, f"{where} is not a JSON object")
    return answer


def settings_of(source: Any) -> Any:
    """A source config's `reconcile:` section (a ReconcileConfig), or None: the providers
    that have a status API declare it, the others have no such key."""
    return getattr(source, "reconcile", None)


def reconciling(config: Any) -> dict[str, Any]:
    """Source name -> its `reconcile:` section, for every source that has one."""
    found = {name: settings_of(source) for name, source in config.sources.items()}
    return {name: settings for name, settings in found.items() if settings is not None}
