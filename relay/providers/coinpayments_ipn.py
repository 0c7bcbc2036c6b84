"""CoinPayments legacy IPN (coinpayments.net): form-encoded POSTs signed in the `HMAC` header.

Authentication: `HMAC` = lowercase hex HMAC-SHA512 of the raw form body, keyed with the IPN
secret; then, as the official plugin does, the form must say `ipn_mode=hmac` and `merchant` must
be the configured merchant id (so another merchant's correctly signed IPN is refused).

Dedupe key: `txn_id` + `status` (+ the confirmation count when sent, + `received_amount`, +
a deposit's `deposit_id`). One IPN per transaction and state; CoinPayments retries up to 10
times without order, and a retry carries the same fields. Not `ipn_id`: whether a retry keeps
it is not documented, and `txn_id` + `status` is the information itself. A new confirmation
count, or more coins received while the status still waits for funds (a second partial
payment), is new information (SPEC 4), so both are in the key; a deposit's `deposit_id` is
what the IPN page names for "duplicate/uniqueness checking" ("multiple deposits with the same
TXID but to different addresses"), so it is in the key too, and is the deposit's payment id.

Amounts: `amount2` (else a deposit's `amount`) in `currency2` is the payment's amount;
`received_amount` ("the amount of currency2 received at the time the IPN was generated") is
`amount_received`, and for a deposit, which is money that arrived, its `amount`. No IPN status
means "needs a person" (-2, -1, 0, 1, 2, 3, 5, >= 100 all map elsewhere), so IPNs yield no
`payment.review`: an underpaid payment that timed out is `payment.expired` with
`amount_received` below `amount`.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urlencode

import aiohttp
from pydantic import Field

from relay.config.types import ApiUrl, ReconcileConfig, Secrets, SourceConfig
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    SampleRequest,
    any_secret_matches,
    bad_signature,
    body_digest,
    decode_signature,
    first,
    hmac_digest,
    parse_form,
    same_text,
)
from relay.reconcile_api import AUTH, BAD_ANSWER, ApiError, StatusAnswer, as_object, call_api

# Status codes (official IPN page and plugin): < 0 failed/expired, >= 100 complete.
_SAMPLE_STATUS = {
    "created": 0,
    "pending": 1,
    "paid": 2,
    "completed": 100,
    "expired": -1,
    "failed": -2,
}


def status_type(status: str | None) -> str:
    """The canonical type of an IPN `status` (a form string, e.g. "100")."""
    try:
        code = int((status or "").strip())
    except ValueError:
        return "payment.other"
    if code >= 100:
        return "payment.completed"  # "never ship until status >= 100": credited
    return {
        0: "payment.created",  # waiting for funds
        1: "payment.pending",  # coins received, confirming
        3: "payment.pending",  # PayPal pending
        5: "payment.pending",  # in escrow
        2: "payment.paid",  # queued for nightly payout: funds received
        -1: "payment.expired",  # cancelled / timed out
        -2: "payment.failed",  # PayPal refund or reversal
    }.get(code, "payment.other")


class CoinpaymentsIpnReconcile(ReconcileConfig):
    """`reconcile:` of a CoinPayments IPN source: an API key pair of the legacy API (My
    Account > API Keys, with `get_tx_info` allowed), not the IPN secret."""

    api_url: ApiUrl = "https://www.coinpayments.net/api.php"
    public_key: str = Field(min_length=1)
    private_key: str = Field(min_length=1)


class CoinpaymentsIpnConfig(SourceConfig):
    provider: Literal["coinpayments_ipn"]
    ipn_secret: Secrets
    merchant_id: str = Field(min_length=1)
    reconcile: CoinpaymentsIpnReconcile | None = None  # SPEC 11: fetch_status below


class CoinpaymentsIpnProvider(Provider):
    kind = "coinpayments_ipn"
    Config = CoinpaymentsIpnConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLE_STATUS)
    config: CoinpaymentsIpnConfig

    def verify(self, request: InboundRequest) -> None:
        given = request.header("hmac")
        if not given:
            raise bad_signature("HMAC header missing")
        candidate = decode_signature(given, "hex")
        if not candidate or not any_secret_matches(
            self.config.ipn_secret, request.body, [candidate], "sha512"
        ):
            raise bad_signature("HMAC matches no configured ipn_secret")
        form = parse_form(request.body)
        if form.get("ipn_mode") != "hmac":
            raise bad_signature("ipn_mode is not hmac")
        if not same_text(self.config.merchant_id, form.get("merchant")):
            raise bad_signature("merchant is not the configured merchant_id")

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        form = parse_form(request.body)
        status = form.get("status")
        is_deposit = form.get("ipn_type") == "deposit"
        currency = first(form.get("currency2"), form.get("currency"))
        price_currency = form.get("currency1")
        # amount1/currency1 is the price in the merchant's currency (usually fiat); it is only
        # a second currency when it differs from the coin paid. Deposits have no price: their
        # fiat value is fiat_amount in fiat_coin (the merchant's chosen fiat currency).
        fiat_amount: str | None
        fiat_currency: str | None
        if price_currency and price_currency != currency:
            fiat_amount, fiat_currency = form.get("amount1"), price_currency
        else:
            fiat_amount, fiat_currency = form.get("fiat_amount"), form.get("fiat_coin")
        txn_id = form.get("txn_id")
        deposit_id = form.get("deposit_id") if is_deposit else None
        confirms = first(form.get("received_confirms"), form.get("confirms"))
        received = form.get("amount") if is_deposit else form.get("received_amount")
        if txn_id:
            key = f"txn:{txn_id}:{status}:{confirms or ''}"
            key += f":dep:{deposit_id}" if deposit_id else ""
            key += f":got:{received}" if received and not is_deposit else ""
        elif form.get("ipn_id"):
            key = f"ipn:{form['ipn_id']}"
        else:
            key = f"body:{body_digest(request.body)}"
        return [
            self.event(
                request,
                dedupe_key=key,
                type=status_type(status),
                provider_event=status,
                payment={
                    "id": first(deposit_id, txn_id, form.get("deposit_id")),
                    "reference": form.get("invoice"),
                    "amount": first(form.get("amount2"), form.get("amount")),
                    "amount_received": received,
                    "currency": currency,
                    "fiat_amount": fiat_amount,
                    "fiat_currency": fiat_currency,
                    # Deposits: txn_id is the coin transaction. Payments: CoinPayments' own id.
                    "tx_hash": txn_id if is_deposit else None,
                    "confirmations": confirms,
                    "description": first(form.get("item_name"), form.get("status_text")),
                },
                data=form,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        status = _SAMPLE_STATUS[event]
        fields = {
            "ipn_version": "1.0",
            "ipn_type": "api",
            "ipn_mode": "hmac",
            "ipn_id": f"relaysample{int(now)}{status + 2}",
            "merchant": self.config.merchant_id,
            "txn_id": "CPXX1234RELAYSAMPLE",
            "status": str(status),
            "status_text": {0: "Waiting for buyer funds", 100: "Complete"}.get(status, "Sample"),
            "currency1": "USD",
            "currency2": "BTC",
            "amount1": "10.00",
            "amount2": "0.00025",
            "invoice": "ORDER-1",
            "item_name": "Sample order",
            "received_amount": "0.00025" if status > 0 else "0",
            "received_confirms": "3" if status > 0 else "0",
        }
        body = urlencode(fields).encode()
        return SampleRequest(
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "HMAC": hmac_digest(self.config.ipn_secret[0], body, "sha512").hex(),
            },
        )


# --- reconciliation (SPEC 11): the status API -------------------------------------------------

_AUTH_WORDS = ("hmac", "key", "permission")  # in `error`: the credentials, not the payment


async def fetch_status(
    session: aiohttp.ClientSession, config: CoinpaymentsIpnConfig, payment_id: str
) -> StatusAnswer:
    """The legacy API's `get_tx_info`, as www.coinpayments.net/apidoc-intro documents every
    call: an `application/x-www-form-urlencoded` POST to `https://www.coinpayments.net/api.php`
    with `version=1`, `cmd`, `key` (the public key) and `format=json`, and the header `HMAC` =
    hex HMAC-SHA512 of the raw POST data keyed with the private key; the answer is
    `{"error": "ok", "result": {...}}`, any other `error` being the message. The result fields
    (`status`, `status_text`, `amountf`, `receivedf`, `recv_confirms`, `coin`, ...) are the
    official PHP library's and the public SDKs' (the apidoc-get-tx-info page itself was not in
    reach), and `status` is the IPN's status code (< 0 failed, >= 100 complete). The dedupe
    key is built as the IPN's (`txn:<txn_id>:<status>:<confirms>:got:<received>`): when the
    IPN of that stage carries the same confirmation count and writes the amount received as
    `receivedf` does, the reconciled event has its event id; whether it does is not
    documented, and either way the claim script's per-stage mark (relay.ledger.record) makes
    that IPN a duplicate.

    Not documented: the HTTP status or message for wrong keys ("the API call is discarded":
    401/403, or an `error` naming the HMAC, key or permissions, are read as credentials
    refused), a rate limit, and whether an unknown txid is an `error` (it is read as one).
    """
    if config.reconcile is None:
        raise ValueError("this source has no reconcile: section")
    settings = config.reconcile
    body = urlencode(
        {
            "version": "1",
            "cmd": "get_tx_info",
            "key": settings.public_key,
            "format": "json",
            "txid": payment_id,
        }
    ).encode()
    answer = as_object(
        await call_api(
            session,
            "POST",
            settings.api_url,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "HMAC": hmac_digest(settings.private_key, body, "sha512").hex(),
            },
            body=body,
            timeout=settings.timeout,
        ),
        "the answer",
    )
    error = str(answer.get("error"))
    if error != "ok":
        kind = AUTH if any(w in error.casefold() for w in _AUTH_WORDS) else BAD_ANSWER
        raise ApiError(kind, f"get_tx_info: {error[:200]}")
    result = as_object(answer.get("result"), "the answer's result")
    status = str(result.get("status", "")).strip()
    confirms = result.get("recv_confirms")
    received = result.get("receivedf")
    return StatusAnswer(
        type=status_type(status) if status else None,
        provider_event=status,
        dedupe_key=f"txn:{payment_id}:{status}:{'' if confirms is None else confirms}"
        + (f":got:{received}" if received else ""),
        data=answer,
        payment={
            "id": payment_id,
            "amount": result.get("amountf"),
            "amount_received": received,
            "currency": result.get("coin"),
            "confirmations": confirms,
            "description": result.get("status_text"),
        },
    )
