"""The provider registry: one module per provider kind, one line here each."""

from __future__ import annotations

from relay.providers import ivpay
from relay.providers.base import InboundRequest, Provider, Rejected, SampleRequest

PROVIDERS: dict[str, type[Provider]] = {
    cls.kind: cls
    for cls in (
        ivpay.IvpayProvider,
    )
}

__all__ = ["PROVIDERS", "InboundRequest", "Provider", "Rejected", "SampleRequest"]
