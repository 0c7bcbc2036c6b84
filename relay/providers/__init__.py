"""The provider registry: one module per provider kind, one line here each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.inbound import InboundRequest
from relay.providers import (
    binance_pay,
    btcpay,
    calypso,
    coinable,
    coinbase_commerce,
    coingate,
    coinpayments,
    coinpayments_ipn,
    cryptoix,
    cryptomus,
    heleket,
    hmac,
    ivpay,
    nowpayments,
    oxapay,
    plisio,
    standard_webhooks,
)
from relay.providers.base import Provider, Rejected, SampleRequest

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
        btcpay.BtcpayProvider,
        coinbase_commerce.CoinbaseCommerceProvider,
        nowpayments.NowpaymentsProvider,
        cryptomus.CryptomusProvider,
        heleket.HeleketProvider,
        plisio.PlisioProvider,
        coingate.CoingateProvider,
        oxapay.OxapayProvider,
        binance_pay.BinancePayProvider,
    )
}

if TYPE_CHECKING:  # the config model imports this registry: no import at run time
    from relay.config.model import LoadedConfig


def build_sources(loaded: LoadedConfig) -> dict[str, Provider]:
    """One provider instance per configured source, by source name (both processes)."""
    return {
        name: PROVIDERS[source.provider](name, source)
        for name, source in loaded.config.sources.items()
    }


__all__ = ["PROVIDERS", "InboundRequest", "Provider", "Rejected", "SampleRequest", "build_sources"]
