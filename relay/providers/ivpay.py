"""IVPAY: no signature; every webhook echoes the merchant's API key in `X-API-KEY`.

Dedupe key: `payment_id` + `status` (IVPAY sends no event id, and a status is final once sent).
"""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import quote

import aiohttp
import orjson

from relay.config.types import ReconcileConfig, Secrets, SourceConfig
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    SampleRequest,
    bad_signature,
    check_json_object,
    parse_json_object,
    safe_time,
    scalar,
    token_matches,
)
from relay.reconcile_api import BAD_ANSWER, ApiError, StatusAnswer, as_object, call_api

_TYPES = {
    "CREATED": "payment.created",
    "PENDING": "payment.pending",
    "PAID": "payment.paid",
    "TIMEOUT": "payment.expired",
}


class IvpayReconcile(ReconcileConfig):
    """`reconcile:` of an IVPAY source: the API takes the same key the webhooks echo, so
    `api_key` defaults to the source's; `api_url` is required (IVPAY documents none)."""

    api_key: str = ""


class IvpayConfig(SourceConfig):
    provider: Literal["ivpay"]
    api_key: Secrets
    reconcile: IvpayReconcile | None = None  # SPEC 11: fetch_status below


class IvpayProvider(Provider):
    kind = "ivpay"
    Config = IvpayConfig
    sample_events: ClassVar[tuple[str, ...]] = ("created", "pending", "paid", "expired")
    secret_headers: ClassVar[tuple[str, ...]] = ("x-api-key",)  # the merchant's API key itself
    config: IvpayConfig

    def verify(self, request: InboundRequest) -> None:
        if not token_matches(self.config.api_key, request.header("x-api-key")):
            raise bad_signature("X-API-KEY missing or not the configured API key")
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        data = parse_json_object(request.body)
        status = str(data.get("status") or "").upper()
        payment_id = data.get("payment_id")
        return [
            self.event(
                request,
                dedupe_key=f"{payment_id}:{status}",
                type=_TYPES.get(status, "payment.other"),
                provider_event=data.get("status"),
                occurred_at=safe_time(scalar(data.get("processed_at"))),
                payment={
                    "id": payment_id,
                    "reference": data.get("foreign_id"),
                    "network": data.get("network"),
                    "tx_url": data.get("tx_url"),
                    "tx_hash": _tx_hash(data.get("tx_url")),
                },
                data=data,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        status = {v.removeprefix("payment."): k for k, v in _TYPES.items()}[event]
        body: dict[str, object] = {
            "payment_id": "6b577835afbefe60335b6e5cd04410a9",
            "status": status,
            "foreign_id": "123456",
        }
        if status != "CREATED":
            body["processed_at"] = int(now)
        if status == "PAID":
            tx = "0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad43550bfbaf41bb1"
            body.update(network="ETH", tx_url=f"https://etherscan.io/tx/{tx}")
        return SampleRequest(
            body=orjson.dumps(body),
            headers={"Content-Type": "application/json", "X-API-KEY": self.config.api_key[0]},
        )


def _tx_hash(tx_url: object) -> str | None:
    # IVPAY sends only an explorer URL; its last path segment is the transaction hash.
    if isinstance(tx_url, str) and "/tx/" in tx_url:
        return tx_url.rstrip("/").rsplit("/", 1)[-1] or None
    return None


# --- reconciliation (SPEC 11): the status API -------------------------------------------------


async def fetch_status(
    session: aiohttp.ClientSession, config: IvpayConfig, payment_id: str
) -> StatusAnswer:
    """IVPAY's `GET /payment/{payment_id}` with the `X-API-KEY` header, as documented at
    docs.ivpay.io/start/ivpay-api/api-reference/payments and .../ivpay-api/authentication:
    200 `{"success": true, "data": {"payment_id", "foreign_id", "processed_at", "status"}}`,
    400 `{"success": false, "error": "..."}`, 401 `{"success": false, "error": "Wrong auth
    parameters"}` ("all requests without valid authentication will receive a 401"). The
    status values are the webhooks' (CREATED, PENDING, PAID, TIMEOUT), so the dedupe key is
    the webhook's own (`payment_id:STATUS`): a reconciled stage has the webhook's event id.

    Not documented: the API's base URL (hence `reconcile.api_url` is required), any rate
    limit, a timeout, the answer for an unknown id (a 400 or 404 is read as an error), and
    whether a PAID answer carries `network` / `tx_url` as the webhook does (used when present).
    """
    if config.reconcile is None:
        raise ValueError("this source has no reconcile: section")
    settings = config.reconcile
    answer = await call_api(
        session,
        "GET",
        f"{settings.api_url}/payment/{quote(payment_id, safe='')}",
        headers={
            "Content-Type": "application/json",
            "X-API-KEY": settings.api_key or config.api_key[0],
        },
        timeout=settings.timeout,
    )
    body = as_object(answer, "the answer")
    if body.get("success") is not True:
        raise ApiError(BAD_ANSWER, f"success is not true: {str(body.get('error'))[:200]}")
    data = as_object(body.get("data"), "the answer's data")
    status = str(scalar(data.get("status")) or "").upper()
    return StatusAnswer(
        type=_TYPES.get(status),
        provider_event=status,
        dedupe_key=f"{scalar(data.get('payment_id')) or payment_id}:{status}",
        data=body,
        payment={
            "id": payment_id,
            "reference": scalar(data.get("foreign_id")),
            "network": scalar(data.get("network")),
            "tx_url": scalar(data.get("tx_url")),
            "tx_hash": _tx_hash(data.get("tx_url")),
        },
        occurred_at=safe_time(scalar(data.get("processed_at"))),
        final=status in ("PAID", "TIMEOUT"),  # IVPAY: both final, nothing follows
    )
