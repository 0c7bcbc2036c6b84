"""IVPAY: no signature; every webhook echoes the merchant's API key in `X-API-KEY`.

Dedupe key: `payment_id` + `status` (IVPAY sends no event id, and a status is final once sent).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import orjson

from relay.config.types import Secrets, SourceConfig
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

_TYPES = {
    "CREATED": "payment.created",
    "PENDING": "payment.pending",
    "PAID": "payment.paid",
    "TIMEOUT": "payment.expired",
}


class IvpayConfig(SourceConfig):
    provider: Literal["ivpay"]
    api_key: Secrets


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
