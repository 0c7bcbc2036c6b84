"""The provider registry: one module per provider kind, one line here each."""

from __future__ import annotations

from relay.providers import (
    calypso,
    coinable,
    coinpayments,
    coinpayments_ipn,
    cryptoix,
    hmac,
    ivpay,
    standard_webhooks,
)
from relay.providers.base import InboundRequest, Provider, Rejected, SampleRequest

PROVIDERS: dict[str, type[Provider]] = {
    cls.kind: cls
    for cls in (
        ivpay.IvpayProvider,
        coinpayments.CoinpaymentsProvider,
        coinpayments_ipn.CoinpaymentsIpnProvider,
        calypso.CalypsoProvider,
        cryptoix.CryptoixProvider,
        coinable.CoinableProvider,
        standard_webhooks.StandardWebhooksProvider,
        hmac.HmacProvider,
    )
}

__all__ = ["PROVIDERS", "InboundRequest", "Provider", "Rejected", "SampleRequest"]
