"""The whole path with known secrets: no secret, API key, token or full signature is logged."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from relay.config.model import validate
from relay.providers import build_sources
from tests.conftest import REPO, wait_for
from tests.processes import RelayProcess, write_config
from tests.sink_servers import Reply, SinkServer

pytestmark = pytest.mark.slow

SECRETS = {
    "IVPAY_API_KEY": "ivpay-SECRET-apikey-5f1c",
    "COINPAYMENTS_CLIENT_ID": "cpclient-0a1b2c3d",
    "COINPAYMENTS_CLIENT_SECRET": "cp-SECRET-client-9d8e",
    "COINPAYMENTS_IPN_SECRET": "ipn-SECRET-7c6b",
    "COINPAYMENTS_MERCHANT_ID": "merchant-4a3b",
    "CALYPSO_SECRET_KEY": "calypso-SECRET-2e1f",
    "CRYPTOIX_WEBHOOK_SECRET": "cryptoix-SECRET-8a7b",
    "COINABLE_URL_TOKEN": "coinable-SECRET-token-6c5d",
    "PARTNER_WHSEC": "whsec_c2VjcmV0LXBhcnRuZXIta2V5LTEyMzQ1Njc4OTA=",
    "BTCPAY_WEBHOOK_SECRET": "btcpay-SECRET-3e2d",
}
SHOP_WHSEC = "whsec_c2hvcC1zZWNyZXQta2V5LWZvci1zaWduaW5nLTEyMzQ="
BEARER = "bearer-SECRET-merchant-1b2c"
# Providers whose signature covers no raw body bytes, so a body with a space appended is still
# authentic to them: IVPAY and Coinable authenticate by a key or URL token; NOWPayments,
# Cryptomus, Heleket and Plisio sign the parsed content (re-serialized).
BODY_NOT_SIGNED = {"ivpay", "coinable", "nowpayments", "cryptomus", "heleket", "plisio"}


async def test_no_secret_reaches_any_log_line(
    tmp_path: Path, redis_url: str, redis: Any, sink_server: SinkServer
) -> None:
    """Valid, rejected, retried and dead-lettered webhooks of every provider log no secret."""
    raw = yaml.safe_load((REPO / "config" / "relay.dev.yaml").read_text())
    raw["redis_url"] = redis_url
    raw["admin"] = {"token": "admin-SECRET-token-9f8e"}
    discord = sink_server.discord_url(token="discordTOKEN-SECRET-" + "x" * 48)
    slack = sink_server.slack_url(channel="Bslacksecret99")
    raw["sinks"] = {
        "shop": {
            "type": "http",
            "url": sink_server.url("/shop"),
            "secret": SHOP_WHSEC,
            "headers": {"Authorization": f"Bearer {BEARER}"},
            "retry": {"schedule": ["100ms"]},
        },
        "ops": {"type": "discord", "url": discord},
        "sales": {"type": "slack", "url": slack},
        "console": {"type": "log", "full": True},
    }
    sink_server.script("/shop", [500, Reply.error(404)])  # a retry, then a dead letter
    env = dict(SECRETS)
    config = write_config(tmp_path, raw)
    web = RelayProcess("serve", config, tmp_path, redis_url, extra_env=env)
    raw["sources"]["coinpayments"]["notification_url"] = f"{web.url}/hooks/coinpayments"
    write_config(tmp_path, raw)
    web.start()
    worker = RelayProcess("worker", config, tmp_path, redis_url, extra_env=env).start()
    await web.ready()
    await worker.ready()

    os.environ.update(env)
    try:
        sources = build_sources(validate(raw, env={**os.environ, **env}))
    finally:
        for name in env:
            os.environ.pop(name, None)
    signatures: set[str] = set()
    sent = tampered = 0
    async with aiohttp.ClientSession() as session:
        for name, provider in sources.items():
            for event in provider.sample_events:
                sample = provider.sample(event, time.time())
                path = f"/hooks/{name}" + (f"/{sample.token}" if sample.token else "")
                for header, value in sample.headers.items():
                    if any(part in header.lower() for part in ("sig", "hmac", "key")):
                        signatures.add(value)
                async with session.post(
                    web.url + path, data=sample.body, headers=sample.headers
                ) as response:
                    assert response.status == 200, (name, event, await response.text())
                sent += 1
                # The same request with a tampered body: rejected, and logged as such.
                expected = 200 if provider.kind in BODY_NOT_SIGNED else 401
                tampered += expected == 401
                async with session.post(
                    web.url + path, data=sample.body + b" ", headers=sample.headers
                ) as response:
                    assert response.status == expected, (name, event, await response.text())
    await wait_for(lambda: redis.hget("relay:stats", "dlv:console:delivered"), timeout=30)
    await wait_for(lambda: redis.zcard("relay:dlq:index"), timeout=30)
    await wait_for(lambda: len(sink_server.requests()) >= 3, timeout=30)
    for request in sink_server.requests("/shop"):
        signatures.add(request.headers["webhook-signature"])
    worker.stop()
    web.stop()

    logs = web.log_path.read_text() + worker.log_path.read_text()
    assert logs.count("\n") > sent  # the path did log
    rejected = [line for line in logs.splitlines() if "webhook rejected" in line]
    assert tampered >= 10 and len(rejected) == tampered
    # CoinGate's credential is a token inside the body: a changed body changes the token.
    odd = [
        line
        for line in rejected
        if "bad_signature" not in line and not ('"coingate"' in line and "bad_token" in line)
    ]
    assert odd == []
    forbidden = {
        **SECRETS,
        "shop": SHOP_WHSEC,
        "bearer": BEARER,
        "discord token": "discordTOKEN-SECRET-",
        "slack path": "Bslacksecret99",
        "admin": "admin-SECRET-token-9f8e",
    }
    forbidden.pop("COINPAYMENTS_CLIENT_ID")  # an identifier, not a secret
    forbidden.pop("COINPAYMENTS_MERCHANT_ID")
    leaks = [name for name, value in forbidden.items() if value in logs]
    leaks += [f"signature {value[:12]}..." for value in signatures if value in logs]
    assert not leaks, f"found in logs: {leaks}"
    assert "SECRET" not in logs
