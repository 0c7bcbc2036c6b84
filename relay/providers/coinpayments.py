"""CoinPayments v2 webhooks (api.coinpayments.com): invoice events of an API integration ("client").

Authentication: `X-CoinPayments-Signature` = base64 HMAC-SHA256, keyed with the client secret as
UTF-8 (it looks like base64 but is not decoded), of the bytes `EF BB BF` (a UTF-8 BOM, from the
sender's .NET StreamWriter) + `POST` + the registered notification URL + the client id + the
`X-CoinPayments-Timestamp` header value + the raw body, with no separators. The URL is the one
configured as `notification_url` (what CoinPayments signs), never the Host the request came to,
which a proxy may change. The timestamp (UTC, no zone) must be within `timestamp_tolerance`.

Dedupe key: `invoice.id` + the event type (case-folded) + a digest of the `invoice` object.
Not the top-level `id`: it is a notification id that live traffic shows changing between
deliveries of the same event, so it would let a retry through as a new event, and a
byte-identical retry is already caught at the door. The invoice object, on the other hand, is
the information: a retry carries the same one, while a new confirmation or state changes it.
Wallet notifications (no invoice) use `transactionId` + type + confirmations; anything else
falls back to the top-level `id`, then to a digest of the body.

Wallet and address webhooks (a-docs.coinpayments.net/api/webhooks/wallets; the payload of
CoinPaymentsNET.github.io `openapi/components/responses/wallets/wallet-notification-payload.yaml`
and of CoinPaymentsNet/examples `MerchantWalletNotification.cs`) carry no `type` and no invoice:
the event is `transactionType` (PascalCase, e.g. `UtxoExternalReceive`), the amounts are decimal
strings in `symbol` (`amount` is net of CoinPayments' fee), the fiat value is `nativeAmount` in
`nativeSymbol`, plus `txHash`, `confirmations` and `requiredConfirmations`. A receive
(`InternalReceive`, `UtxoExternalReceive`, `AccountBasedExternalReceive`,
`AccountBasedExternalTokenReceive`, `SameUserReceive`, `ReceiveTestFundsFromPool`) is funds
received: `payment.pending` while `confirmations` < `requiredConfirmations`, then
`payment.paid`, as CoinPayments itself draws the line for invoices (invoicePending: seen with
too few confirmations; invoicePaid: "all required confirmations ... funds have been obtained by
CoinPayments"). Not `completed`: that is the invoice's later settlement to the merchant balance
(invoiceCompleted), and no wallet notification reports one. `amount` is then also
`amount_received`. Spends, conversions, sweeps and `Unknown` move money out or between wallets:
`payment.other`, still with their amounts, currency and hash.

`amount_received` of an invoice event: CoinPayments sends what has arrived only per payment
(`payments[].hotWallet` confirmed and unconfirmed amounts, notification-payload.yaml), as integer
minor units of the payment's currency, which is another currency than the invoice's and is named
by a numeric id; the decimal value is not known here (SPEC 4), so it stays in `data`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import orjson
from pydantic import Field, field_validator

from relay.config.types import ApiUrl, Duration, ReconcileConfig, Secrets, SourceConfig
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    SampleRequest,
    any_secret_matches,
    as_dict,
    bad_signature,
    body_digest,
    check_json_object,
    decode_signature,
    first,
    header_bytes,
    hmac_digest,
    parse_instant,
    parse_json_object,
    safe_time,
    scalar,
    skew_text,
    stale_timestamp,
    token_matches,
    value_digest,
)
from relay.reconcile_api import BAD_ANSWER, ApiError, StatusAnswer, as_object, call_api

BOM = b"\xef\xbb\xbf"
DIAGNOSE_MAX_BYTES = 65536  # a failed signature is retried with other URLs only up to this size

# Keys are case-folded: subscriptions say `invoicePaid`, live payloads say `InvoicePaid`.
_TYPES = {
    "invoicecreated": "payment.created",
    "paymentcreated": "payment.created",
    "invoicepending": "payment.pending",
    "invoicepaid": "payment.paid",
    "invoicecompleted": "payment.completed",
    "invoicecancelled": "payment.cancelled",
    "invoicetimedout": "payment.expired",
    "paymenttimedout": "payment.expired",
}

# Wallet notifications (`transactionType`, case-folded) that are funds coming in.
_RECEIVES = frozenset(
    {
        "internalreceive",
        "utxoexternalreceive",
        "accountbasedexternalreceive",
        "accountbasedexternaltokenreceive",
        "sameuserreceive",
        "receivetestfundsfrompool",
    }
)

# What `relay trigger` sends: the PascalCase type seen live, and the invoice state it carries.
_SAMPLES = {
    "created": ("InvoiceCreated", "Unpaid"),
    "pending": ("InvoicePending", "Pending"),
    "paid": ("InvoicePaid", "Paid"),
    "completed": ("InvoiceCompleted", "Completed"),
    "cancelled": ("InvoiceCancelled", "Cancelled"),
    "expired": ("InvoiceTimedOut", "TimedOut"),
}


class CoinpaymentsReconcile(ReconcileConfig):
    """`reconcile:` of a CoinPayments v2 source: the API signs with the same integration
    client as the webhooks, so `client_id` / `client_secret` default to the source's."""

    api_url: ApiUrl = "https://api.coinpayments.com/api/v2"
    client_id: str = ""
    client_secret: str = ""


class CoinpaymentsConfig(SourceConfig):
    provider: Literal["coinpayments"]
    client_id: str = Field(min_length=1)
    client_secret: Secrets
    notification_url: str  # exactly as registered with CoinPayments: it is part of the signature
    timestamp_tolerance: Duration = Field(default=300.0, gt=0)
    reconcile: CoinpaymentsReconcile | None = None  # SPEC 11: fetch_status below

    @field_validator("notification_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("not a valid URL (the notificationsUrl registered with CoinPayments)")
        return value


def _client_form(client_id: str) -> str:
    # The dashboard shows the client id as a dashed UUID, the header sends it as 32 hex digits.
    return client_id.replace("-", "").strip().lower()


class CoinpaymentsProvider(Provider):
    kind = "coinpayments"
    Config = CoinpaymentsConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLES)
    config: CoinpaymentsConfig

    def verify(self, request: InboundRequest) -> None:
        config = self.config
        signature = request.header("x-coinpayments-signature")
        client = request.header("x-coinpayments-client")
        stamp = request.header("x-coinpayments-timestamp")
        if not signature or not client or not stamp:
            raise bad_signature("X-CoinPayments-Signature, -Client or -Timestamp header missing")
        if not token_matches([_client_form(config.client_id)], _client_form(client)):
            raise bad_signature("X-CoinPayments-Client is not the configured client_id")
        candidate = decode_signature(signature, "base64")
        head = BOM + request.method.encode() + config.notification_url.encode()
        tail = header_bytes(stamp) + request.body
        matched = False
        # The sender signs the client id as it sends it; the configured spelling is tried too.
        for client_id in dict.fromkeys((header_bytes(client), config.client_id.encode())):
            matched |= any_secret_matches(
                config.client_secret, head + client_id + tail, [candidate] if candidate else []
            )
        if not matched:
            raise bad_signature(
                self._unsigned_reason(request, candidate, header_bytes(client), tail)
            )
        # After the signature: `stale_timestamp` then means "authentic but old" (clock, queueing).
        sent_at = parse_instant(stamp)
        if sent_at is None:
            raise bad_signature("X-CoinPayments-Timestamp is not a date-time")
        now = request.received_at or time.time()
        if abs(now - sent_at) > config.timestamp_tolerance:
            raise stale_timestamp(
                f"X-CoinPayments-Timestamp {stamp.strip()[:32]} is {skew_text(sent_at, now)}"
            )
        check_json_object(request.body)

    def _unsigned_reason(
        self, request: InboundRequest, candidate: bytes | None, client: bytes, tail: bytes
    ) -> str:
        """Why the signature failed. CoinPayments' most common mistake is a notification_url
        that is not the URL registered, so the URL the signature would match is named (the
        request's own URL, or the configured one with the request's host, the other scheme or
        a trailing slash toggled); never a secret. Tried only for small bodies."""
        configured = self.config.notification_url
        if candidate and len(request.body) <= DIAGNOSE_MAX_BYTES:
            for url in _url_guesses(request, configured):
                message = BOM + request.method.encode() + url.encode() + client + tail
                if any_secret_matches(self.config.client_secret, message, [candidate]):
                    return (
                        f"signature would match for URL {url}: set notification_url to the URL "
                        "registered with CoinPayments"
                    )
        host = _request_host(request)
        if host and host.lower() != urlsplit(configured).netloc.lower():
            return (
                f"X-CoinPayments-Signature matches no client_secret with notification_url "
                f"{configured}, and the request came to host {host}: set notification_url to "
                "the URL registered with CoinPayments"
            )
        return (
            "X-CoinPayments-Signature matches no configured client_secret with notification_url "
            f"{configured} (or that is not the URL registered with CoinPayments)"
        )

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        data = parse_json_object(request.body)
        invoice = as_dict(data.get("invoice"))
        # Invoice webhooks name their event in `type`, wallet webhooks in `transactionType`.
        provider_event = scalar(
            data.get("type") if invoice else first(data.get("type"), data.get("transactionType"))
        )
        name = str(provider_event) if provider_event is not None else ""
        if invoice:
            kind = _TYPES.get(name.casefold(), "payment.other")
            payment = {
                "id": scalar(invoice.get("id")),
                "reference": scalar(first(invoice.get("invoiceId"), invoice.get("invoiceNumber"))),
                # Invoice amounts are integer minor units of a currency given only by a numeric
                # id: the decimal value is unknown here, so they stay in `data` only.
                "amount": _decimal_value(as_dict(invoice.get("amount")).get("total")),
                "description": scalar(invoice.get("description")),
            }
        else:
            kind, payment = _wallet_event(data, name)
        return [
            self.event(
                request,
                dedupe_key=_dedupe_key(data, invoice, name, request.body),
                type=kind,
                provider_event=None if provider_event is None else name,
                occurred_at=safe_time(scalar(data.get("timestamp"))),
                payment=payment,
                data=data,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        kind, state = _SAMPLES[event]
        moment = datetime.fromtimestamp(int(now), UTC)
        notification_id = hashlib.sha256(f"{kind}{now}".encode()).hexdigest()[:32]
        body = orjson.dumps(
            {
                "id": notification_id,
                "type": kind,
                "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00"),
                "invoice": {
                    "invoiceId": "0067",
                    "id": "2008d68d-0f66-44ec-8500-68d054b882b9",
                    "merchantClientId": self.config.client_id,
                    "invoiceNumber": "0067",
                    "createdAt": int(now) - 60,
                    "expiresDate": int(now) + 3600,
                    "lineItems": [
                        {"amount": 10000, "name": "test item", "quantity": 1, "type": "Quantity"}
                    ],
                    "amount": {
                        "currency": {"id": 5057, "smartContract": None},
                        "subtotal": 10000,
                        "shippingTotal": 0,
                        "handlingTotal": 0,
                        "discountTotal": 0,
                        "taxTotal": 0,
                        "total": 10000,
                    },
                    "state": state,
                    "payments": [],
                    "partialAcceptAvailable": False,
                },
            }
        )
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
        return SampleRequest(
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-CoinPayments-Client": self.config.client_id,
                "X-CoinPayments-Timestamp": stamp,
                "X-CoinPayments-Signature": signature(
                    self.config.client_secret[0],
                    self.config.notification_url,
                    self.config.client_id,
                    stamp,
                    body,
                ),
            },
        )


_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _request_host(request: InboundRequest) -> str | None:
    """The host the sender addressed (a proxy's X-Forwarded-Host first), when it is one."""
    given = request.header("x-forwarded-host") or request.header("host") or ""
    host = given.split(",")[0].strip()
    return host if len(host) <= 260 and _HOST.fullmatch(host) else None


def _url_guesses(request: InboundRequest, configured: str) -> list[str]:
    """URLs CoinPayments may have signed instead of the configured notification_url."""
    parts = urlsplit(configured)
    other = "https" if parts.scheme == "http" else "http"
    proto = (request.header("x-forwarded-proto") or "").split(",")[0].strip().lower()
    schemes = [proto] if proto in ("http", "https") else [parts.scheme, other]
    path = f"/hooks/{request.source}" + (f"/{request.token}" if request.token else "")
    guesses = []
    host = _request_host(request)
    if host:
        guesses += [f"{scheme}://{host}{path}" for scheme in schemes]
        guesses.append(urlunsplit((parts.scheme, host, parts.path, parts.query, "")))
    slash = parts.path[:-1] if parts.path.endswith("/") else parts.path + "/"
    guesses.append(urlunsplit((other, parts.netloc, parts.path, parts.query, "")))
    guesses.append(urlunsplit((parts.scheme, parts.netloc, slash, parts.query, "")))
    return [url for url in dict.fromkeys(guesses) if url != configured]


def signature(secret: str, url: str, client_id: str, stamp: str, body: bytes) -> str:
    """The `X-CoinPayments-Signature` CoinPayments sends for this request."""
    message = BOM + b"POST" + url.encode() + client_id.encode() + stamp.encode() + body
    return base64.b64encode(hmac_digest(secret, message)).decode()


def _decimal_value(value: Any) -> str | Decimal | None:
    """A decimal string ("0.0015") is a known decimal value; an integer is minor units: None."""
    if isinstance(value, str) and "." in value:
        try:
            Decimal(value)
        except InvalidOperation:
            return None
        return value
    if isinstance(value, Decimal):  # a JSON number with a fraction is a decimal value too
        return value
    return None


def _wallet_event(data: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """The canonical type and payment fields of a wallet/address notification."""
    get = {key: scalar(value) for key, value in data.items()}
    amount = _wallet_amount(get.get("amount"))
    kind = _TYPES.get(name.casefold(), "payment.other")
    if name.casefold() in _RECEIVES:
        seen, needed = _count(get.get("confirmations")), _count(get.get("requiredConfirmations"))
        # Without both counts (an internal transfer needs no confirmation) the funds are in.
        confirming = seen is not None and needed is not None and seen < needed
        kind = "payment.pending" if confirming else "payment.paid"
    return kind, {
        "id": first(get.get("transactionId"), get.get("spendRequestId")),
        "amount": amount,
        "amount_received": amount if name.casefold() in _RECEIVES else None,
        "currency": first(get.get("symbol"), get.get("totalAmountSymbol")),
        "fiat_amount": _wallet_amount(get.get("nativeAmount")),
        "fiat_currency": get.get("nativeSymbol"),
        "tx_hash": get.get("txHash"),
        "confirmations": get.get("confirmations"),
    }


def _count(value: Any) -> Decimal | None:
    """A confirmation count as a Decimal (compared without building a huge int), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        return None
    try:
        number = Decimal(value.strip()[:40] if isinstance(value, str) else value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _wallet_amount(value: Any) -> Any:
    """Wallet amounts are decimal strings (MerchantWalletNotification.cs): "1" is one coin.
    A bare JSON integer (the OpenAPI file says `integer` for some) could be minor units: None."""
    return value if isinstance(value, (str, Decimal)) else None


def _dedupe_key(data: dict[str, Any], invoice: dict[str, Any], name: str, body: bytes) -> str:
    if invoice.get("id") is not None:
        return f"invoice:{invoice['id']}:{name.casefold()}:{value_digest(invoice)}"
    if data.get("transactionId") is not None:
        return f"wallet:{data['transactionId']}:{name.casefold()}:{data.get('confirmations')}"
    if scalar(data.get("id")) is not None:
        return f"id:{data['id']}"
    return f"body:{body_digest(body)}"


# --- reconciliation (SPEC 11): the status API -------------------------------------------------

# The invoice `status` of the API (schema invoiceByIdRes: draft, scheduled, unpaid, pending,
# paid, completed, cancelled, timedOut, deleted), case-folded; webhooks spell it `state`.
_API_STATUS = {
    "draft": "payment.created",
    "scheduled": "payment.created",
    "unpaid": "payment.created",
    "pending": "payment.pending",
    "paid": "payment.paid",
    "completed": "payment.completed",
    "cancelled": "payment.cancelled",
    "timedout": "payment.expired",
}


def api_headers(
    client_id: str, secret: str, method: str, url: str, body: bytes = b""
) -> dict[str, str]:
    """The three headers of a signed API request: the webhooks' scheme with this request's
    method, full URL and body (empty for a GET) and the current UTC time."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    message = BOM + method.encode() + url.encode() + client_id.encode() + stamp.encode() + body
    return {
        "X-CoinPayments-Client": client_id,
        "X-CoinPayments-Timestamp": stamp,
        "X-CoinPayments-Signature": base64.b64encode(hmac_digest(secret, message)).decode(),
    }


async def fetch_status(
    session: aiohttp.ClientSession, config: CoinpaymentsConfig, payment_id: str
) -> StatusAnswer:
    """CoinPayments v2 "Get invoice by Id", `GET {api_url}/merchant/invoices/{id}`, signed as
    a-docs.coinpayments.net/api/auth/generate-api-signature and the repository
    CoinPaymentsNet/CoinPaymentsNET.github.io (`openapi/paths/auth/auth.md`,
    `openapi/openapi.yaml`, `openapi/paths/invoices/get-by-id.yaml`,
    `openapi/components/responses/invoices/invoiceByIdRes.yaml`) describe it: headers
    `X-CoinPayments-Client`, `X-CoinPayments-Timestamp` (UTC `YYYY-MM-DDTHH:mm:ss`) and
    `X-CoinPayments-Signature` = base64 HMAC-SHA256, keyed with the client secret as UTF-8, of
    U+FEFF + method + full URL + client id + timestamp + body ("" for a GET). The answer is
    the invoice; its `status` is one of draft, scheduled, unpaid, pending, paid, completed,
    cancelled, timedOut, deleted. docs.coinpayments.com: v1 and v2 are both served.

    Not documented: the answer's exact envelope (the invoice itself is read, or an `invoice`
    member), which id form the path takes (the webhooks' `invoice.id` is used), the answer
    to wrong credentials (401/403 are read as such), a rate limit, and what `deleted` means
    for a payment (not mapped: nothing is emitted for it). One docs sample leaves the
    timestamp out of a body-less signature; the general rule and the SDK include it, as here.
    The webhook's dedupe key digests the webhook's own invoice object, which this answer does
    not reproduce: the reconciled event has a key of its own, and the claim script's
    per-stage mark (relay.ledger.record) makes the later webhook of that stage a duplicate.
    """
    if config.reconcile is None:
        raise ValueError("this source has no reconcile: section")
    settings = config.reconcile
    url = f"{settings.api_url}/merchant/invoices/{quote(payment_id, safe='')}"
    client_id = settings.client_id or config.client_id
    secret = settings.client_secret or config.client_secret[0]
    answer = as_object(
        await call_api(
            session,
            "GET",
            url,
            headers=api_headers(client_id, secret, "GET", url),
            timeout=settings.timeout,
        ),
        "the answer",
    )
    invoice = as_dict(answer.get("invoice")) or answer
    status = scalar(first(invoice.get("status"), invoice.get("state")))
    if status is None:
        raise ApiError(BAD_ANSWER, "the answer has no invoice status")
    kind = _API_STATUS.get(str(status).casefold())
    amount = as_dict(invoice.get("amount"))
    return StatusAnswer(
        type=kind,
        provider_event=str(status),
        dedupe_key=f"reconciled:{payment_id}:{str(status).casefold()}",
        data=answer,
        payment={
            "id": payment_id,
            "reference": scalar(first(invoice.get("invoiceId"), invoice.get("invoiceNumber"))),
            "amount": _decimal_value(amount.get("valueAsDecimal")),
            "description": scalar(invoice.get("description")),
        },
        occurred_at=safe_time(
            scalar(
                first(invoice.get("completed"), invoice.get("confirmed"), invoice.get("created"))
            )
        ),
    )
