r"""Binance Pay (merchant webhooks): an RSA signature in the `BinancePay-*` headers.

Authentication (developers.binance.com/docs/binance-pay/webhook-common, "Verify the
Signature"): the payload is `BinancePay-Timestamp + "\n" + BinancePay-Nonce + "\n" + raw body
+ "\n"` (LF, the header values and body bytes exactly as sent), signed SHA256withRSA by Binance;
`BinancePay-Signature` is its base64. It is verified with Binance's public key, which the
merchant fetches once from the "Query Certificate" API (`POST
/binancepay/openapi/certificates`, answer `certPublic` + `certSerial`) and puts in `public_key`
as PEM (a list: add the new key before Binance rotates). `BinancePay-Certificate-SN` names the
key ("MD5 hash value of public key"); since every configured key is tried, it is only required
to be present. The timestamp (Unix milliseconds) is signed; outside `timestamp_tolerance`
(default 5m; Binance documents none) is `401 stale_timestamp`, checked after the signature.

Payload (webhook "Order Notification"): `{"bizType": "PAY", "bizId": <long>, "bizIdStr":
"...", "bizStatus": "PAY_SUCCESS" | "PAY_CLOSED", "data": "<JSON string>"}`: `data` is a JSON
object written as a string, with `merchantTradeNo` (the merchant's order id, the reference),
`totalFee` + `currency`, `transactTime` (ms), `productName`, `transactionId`, `paymentInfo`...
The signature covers the raw bytes; `data` is parsed only to normalize (exact decimals), and
the event's `data` holds the envelope with that object parsed (the string when it does not
parse). Refund notifications have `bizType: PAY_REFUND` (REFUND_SUCCESS, REFUND_REJECTED),
payouts `PAYOUT`/`PAYOUT_NON_BN`.

Statuses: PAY + PAY_SUCCESS -> completed (paid into the merchant's Binance Pay balance; Binance
sends only final states); PAY + PAY_CLOSED -> expired (closed unpaid: timed out, or closed by
the merchant's Close Order call, which the notification does not tell apart); every refund,
payout or unknown combination -> other. Binance Pay moves funds between Binance accounts, so
there is no chain transaction hash; `transactionId` stays in `data`. `amount_received` is
`totalFee` on PAY_SUCCESS (Binance Pay has no partial payments: an order is paid in full or
closed).

Answer: Binance wants `{"returnCode":"SUCCESS","returnMessage":null}` ("Response Parameters",
returnCode required; on anything else it retries, up to 6 times, and its portal shows a
failure): `stored_answer` gives it, with the relay's own `ok` and `id` beside it.

Dedupe key: `bizType` + `bizIdStr` (else `bizId`) + `bizStatus`. A retry is signed afresh (new
nonce and timestamp) over the same body: one event. Each order has its own prepay id; a
refund of it is another `bizType`, another event. Without an id, a body digest.

Status API: "Query Order", `POST https://bpay.binanceapi.com/binancepay/openapi/v2/order/query`
with `merchantTradeNo` or `prepayId`, signed with the merchant's API key and secret
(HMAC-SHA512 `BinancePay-*` request headers, "API Common Rules").
"""

from __future__ import annotations

import base64
import hashlib
import time
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import orjson
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import AfterValidator, BeforeValidator, Field

from relay.config.types import Duration, SourceConfig
from relay.events import PaymentEvent, dumps
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    Rejected,
    SampleRequest,
    bad_signature,
    body_digest,
    check_json_object,
    decode_signature,
    first,
    header_bytes,
    parse_json_object,
    safe_time,
    scalar,
    stale_timestamp,
)

_HEADERS = ("timestamp", "nonce", "signature", "certificate-sn")

# Canonical short name -> (bizType, bizStatus) a sample carries.
_SAMPLES = {
    "completed": ("PAY", "PAY_SUCCESS"),
    "expired": ("PAY", "PAY_CLOSED"),
    "other": ("PAY_REFUND", "REFUND_SUCCESS"),
}


def _pem(text: str) -> str:
    """PEM as given, or Binance's `certPublic` without its armour (bare base64 DER)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return text
    return f"-----BEGIN PUBLIC KEY-----\n{''.join(text.split())}\n-----END PUBLIC KEY-----"


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key from PEM (or bare base64 DER); ValueError for anything else."""
    try:
        key = serialization.load_pem_public_key(_pem(text).encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key (paste Binance's certPublic)") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key
    raise ValueError("not an RSA public key")


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """The RSA private key `relay trigger` signs samples with (a test key, never Binance's)."""
    try:
        key = serialization.load_pem_private_key(text.strip().encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    raise ValueError("not an RSA private key")


def _public_keys(value: list[str]) -> list[str]:
    for text in value:
        load_public_key(text)
    return value


def _private_key(value: str | None) -> str | None:
    if value:
        load_private_key(value)
    return value or None


def _key_list(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        value = [v for v in value if not (isinstance(v, str) and not v.strip())]
        if not value:
            raise ValueError("a public key is required (is its environment variable set?)")
    return value


PublicKeys = Annotated[list[str], BeforeValidator(_key_list), AfterValidator(_public_keys)]


class BinancePayConfig(SourceConfig):
    provider: Literal["binance_pay"]
    public_key: PublicKeys  # Binance's webhook public key(s), PEM: from Query Certificate
    timestamp_tolerance: Duration = Field(default=300.0, gt=0)
    # Only for `relay trigger` and tests: a key pair of your own whose public half is also in
    # public_key. Never Binance's (Binance keeps its private key).
    sample_private_key: Annotated[str | None, AfterValidator(_private_key)] = None


def certificate_sn(key: rsa.RSAPublicKey) -> str:
    """Our stand-in for the certificate serial: MD5 (hex) of the DER public key."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.md5(der, usedforsecurity=False).hexdigest()


def signed_payload(timestamp: bytes, nonce: bytes, body: bytes) -> bytes:
    return timestamp + b"\n" + nonce + b"\n" + body + b"\n"


def inner_data(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The envelope's `data`: a JSON string (an object already, leniently); None if neither."""
    data = payload.get("data")
    if isinstance(data, dict):
        return data
    if not isinstance(data, str):
        return None
    try:
        return parse_json_object(data.encode("utf-8", "surrogatepass"))
    except Rejected:
        return None


def canonical_type(biz_type: str | None, biz_status: str | None) -> str:
    if (biz_type or "").upper() != "PAY":
        return "payment.other"  # refunds, payouts: not a payment's own state
    return {"PAY_SUCCESS": "payment.completed", "PAY_CLOSED": "payment.expired"}.get(
        (biz_status or "").upper(), "payment.other"
    )


class BinancePayProvider(Provider):
    kind = "binance_pay"
    Config = BinancePayConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLES)
    config: BinancePayConfig

    def __init__(self, name: str, config: BinancePayConfig) -> None:
        super().__init__(name, config)
        self._keys = [load_public_key(text) for text in config.public_key]
        self._signer = (
            load_private_key(config.sample_private_key) if config.sample_private_key else None
        )
        if self._signer is None:  # without a key pair of one's own, nothing can be signed
            self.sample_events = ()  # type: ignore[misc]

    def verify(self, request: InboundRequest) -> None:
        given = {name: request.header(f"binancepay-{name}") for name in _HEADERS}
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise bad_signature(f"BinancePay-{missing[0].title()} header missing")
        stamp, nonce = given["timestamp"] or "", given["nonce"] or ""
        signature = given["signature"] or ""
        candidate = decode_signature(signature, "base64")
        message = signed_payload(header_bytes(stamp), header_bytes(nonce), request.body)
        if not candidate or not any(self._verifies(key, candidate, message) for key in self._keys):
            raise bad_signature("BinancePay-Signature matches no configured public_key")
        text = stamp.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 16):
            raise stale_timestamp("BinancePay-Timestamp is not Unix milliseconds")
        now = request.received_at or time.time()
        if abs(now - int(text) / 1000.0) > self.config.timestamp_tolerance:
            raise stale_timestamp(f"BinancePay-Timestamp {text} outside tolerance")
        check_json_object(request.body)

    @staticmethod
    def _verifies(key: rsa.RSAPublicKey, signature: bytes, message: bytes) -> bool:
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        payload = parse_json_object(request.body)
        inner = inner_data(payload)
        order = inner or {}
        biz_type, biz_status = scalar(payload.get("bizType")), scalar(payload.get("bizStatus"))
        type_name = None if biz_type is None else str(biz_type)
        status_name = None if biz_status is None else str(biz_status)
        canonical = canonical_type(type_name, status_name)
        biz_id = first(scalar(payload.get("bizIdStr")), scalar(payload.get("bizId")))
        if biz_id is not None:
            key = f"biz:{type_name}:{biz_id}:{status_name}"
        else:
            key = f"body:{body_digest(request.body)}"
        total = scalar(order.get("totalFee"))
        payment = {
            "id": biz_id,
            "reference": scalar(order.get("merchantTradeNo")),
            "amount": total,
            "amount_received": total if canonical == "payment.completed" else None,
            "currency": scalar(order.get("currency")),
            "description": scalar(order.get("productName")),
        }
        data = {**payload, "data": inner} if inner is not None else payload
        return [
            self.event(
                request,
                dedupe_key=key,
                type=canonical,
                provider_event=status_name,
                occurred_at=safe_time(scalar(order.get("transactTime"))),
                payment=payment,
                data=data,
            )
        ]

    def stored_answer(self, inbound_id: str, duplicate: bool) -> tuple[bytes, str] | None:
        """Binance's required answer (returnCode), with the relay's own fields beside it."""
        answer = {"returnCode": "SUCCESS", "returnMessage": None, "ok": True, "id": inbound_id}
        if duplicate:
            answer["duplicate"] = True
        return orjson.dumps(answer), "application/json"

    def sample(self, event: str, now: float) -> SampleRequest:
        if self._signer is None:
            raise ValueError(f"source {self.name!r}: set sample_private_key to sign samples")
        biz_type, biz_status = _SAMPLES[event]
        order = {
            "merchantTradeNo": "order1001",
            "productType": "Food",
            "productName": "Ice Cream",
            "transactTime": int(now * 1000),
            "tradeType": "WEB",
            "totalFee": "0.88000000",
            "currency": "USDT",
            "openUserId": "1211HS10K81f4273ac031",
            "transactionId": "M_R_282737362839373",
        }
        envelope = {
            "bizType": biz_type,
            "bizId": Decimal(29383937493038367292),  # beyond 64 bits, as in the docs
            "bizIdStr": "29383937493038367292",
            "bizStatus": biz_status,
            "data": dumps(order).decode().replace('"0.88000000"', "0.88000000"),
        }
        body = dumps(envelope)
        stamp = str(int(now * 1000)).encode()
        nonce = hashlib.sha256(stamp + body).hexdigest()[:32].encode()
        signature = self._signer.sign(
            signed_payload(stamp, nonce, body), padding.PKCS1v15(), hashes.SHA256()
        )
        return SampleRequest(
            body=body,
            headers={
                "Content-Type": "application/json",
                "BinancePay-Timestamp": stamp.decode(),
                "BinancePay-Nonce": nonce.decode(),
                "BinancePay-Signature": base64.b64encode(signature).decode(),
                "BinancePay-Certificate-SN": certificate_sn(self._signer.public_key()),
            },
        )
