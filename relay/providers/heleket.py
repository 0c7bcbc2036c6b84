"""Heleket payment webhooks: the Cryptomus platform under another brand (doc.heleket.com).

Everything but the name and the address is relay.providers.cryptomus: the same payload fields,
the same statuses and mapping, the same `sign` (md5 of base64 of the body without `sign` as PHP's
`json_encode(..., JSON_UNESCAPED_UNICODE)` writes it, then the API key), the same dedupe key.
Follows doc.heleket.com (`methods/payments/webhook`, `methods/payments/payment-statuses`,
`general/request-format`) and Heleket's official SDKs: Heleket/php-sdk
`src/Webhook/WebhookVerifier.php`, `src/Signature/Signer.php`, `src/Enum/PaymentStatus.php`,
`docs/06-webhooks.md` (the slash-escaping trap; webhooks come from 31.133.220.8; retries until
answered 200; `(uuid, status)` idempotency) and `docs/10-reference.md` (statuses, endpoints), and
Heleket/go-sdk `webhook/verifier.go` (raw body with `sign` cut out) and its tests.

Authentication: as Cryptomus, with Heleket's payment API key (and its payout key for payout
webhooks) in `api_key`. Webhooks come from 31.133.220.8: put it in `allowed_ips`.

Dedupe key: as Cryptomus: `type` + `uuid` + `status` + `payment_amount` + `txid`.

Status API: `POST https://api.heleket.com/v1/payment/info` with body `{"uuid": ...}` (or
`{"order_id": ...}`) and headers `merchant` and `sign`; `POST /v1/payment/resend` re-sends a
webhook.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from relay.config.types import SourceConfig
from relay.providers.cryptomus import CryptomusProvider, MerchantConfig

WEBHOOK_IPS = ("31.133.220.8",)


class HeleketConfig(MerchantConfig):
    provider: Literal["heleket"]


class HeleketProvider(CryptomusProvider):
    kind = "heleket"
    Config: ClassVar[type[SourceConfig]] = HeleketConfig
    brand: ClassVar[str] = "Heleket"
