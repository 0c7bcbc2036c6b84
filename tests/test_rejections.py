"""Rejected requests kept with their raw bytes (SPEC 9), and `relay rejections list | show |
replay`, end to end: the real ingress over HTTP, the real Redis, the console script in a child
process. What must never reach Redis (credential headers, URL tokens) is looked for in every raw
value Redis holds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from arq.constants import job_key_prefix

from relay import clock
from relay.config.model import LoadedConfig
from relay.ingress.guard import RejectionLog
from relay.keys import Keys
from relay.queue import deserialize
from relay.rejected import (
    Keeper,
    RejectedRequest,
    get_rejected,
    list_rejected,
    rejected_usage,
    replay_rejected,
)
from tests.conftest import TEST_SECRETS, ConfigFactory
from tests.processes import write_config

RELAY = str(Path(sys.executable).with_name("relay"))
KEYS = Keys()
OLD_SECRET = TEST_SECRETS["HMAC_WEBHOOK_SECRET"]  # what the relay's config holds
NEW_SECRET = TEST_SECRETS["BTCPAY_WEBHOOK_SECRET"]  # what the provider now signs with
TOKEN = TEST_SECRETS["COINABLE_URL_TOKEN"]
WRONG_TOKEN = "coinable-wrong-url-token-6d1f"
GHOST_TOKEN = "ghost-url-token-a91c77"
CREDENTIALS = {
    "Authorization": "Bearer auth-credential-5f2b9e",
    "Cookie": "session=cookie-credential-0c3d7a",
    "X-API-KEY": "api-key-credential-88e1f4",
}


def btcpay(secret: str) -> dict[str, Any]:
    return {
        "provider": "hmac",
        "secret": secret,
        "signature_header": "BTCPay-Sig",
        "signature_prefix": "sha256=",
        "fields": {"payment_id": "invoiceId", "event": "type"},
    }


def sources(held: str = "${HMAC_WEBHOOK_SECRET}") -> dict[str, Any]:
    """The relay's sources; `held` is the secret its btcpay source holds."""
    return {
        "btcpay": btcpay(held),
        "coinable": {"provider": "coinable", "url_token": "${COINABLE_URL_TOKEN}"},
        "ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"},
    }


def invoice(number: int, pad: int = 0) -> bytes:
    body = {"invoiceId": f"inv-{number}", "type": "InvoiceSettled", "note": "x" * pad}
    return orjson.dumps(body)


def signed(body: bytes, secret: str = NEW_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "BTCPay-Sig": f"sha256={digest}"}


def whsec_signed(body: bytes, msg_id: str, stamp: int) -> dict[str, str]:
    key = base64.b64decode(TEST_SECRETS["PARTNER_WHSEC"].removeprefix("whsec_"))
    message = f"{msg_id}.{stamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": f"v1,{signature}",
    }


async def relay(config: Path, redis_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        RELAY,
        "rejections",
        "--config",
        str(config),
        *args,
        env={**os.environ, **TEST_SECRETS, "REDIS_URL": redis_url, "RELAY_CONFIG": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def everything_in_redis(redis: Any) -> bytes:
    """Every key and every value Redis holds, raw, as one byte string."""
    chunks: list[bytes] = []
    async for key in redis.scan_iter("*"):
        chunks.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            chunks.append(await redis.get(key))
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                chunks += [field, value]
        elif kind == "list":
            chunks += await redis.lrange(key, 0, -1)
        elif kind == "zset":
            chunks += await redis.zrange(key, 0, -1)
        elif kind == "set":
            chunks += list(await redis.smembers(key))
    return b"\n".join(chunks)


async def recorded_ids(redis: Any) -> list[str]:
    """The kept requests' ids named by the `relay status` list, newest first."""
    entries = [orjson.loads(raw) for raw in await redis.lrange(KEYS.rejections, 0, -1)]
    return [entry["id"] for entry in entries if "id" in entry]


async def test_rejected_then_replayed_once_the_secret_is_fixed(
    ingress: Any, redis: Any, redis_url: str, tmp_path: Path
) -> None:
    """A request signed with a secret the config does not hold yet is answered 401 and kept,
    headers and body, without its credentials; once the config holds the secret a replay
    stores it; what cannot be verified again says which secret it lacks."""
    client = await ingress({"sources": sources()})
    body = invoice(1)
    response = await client.post(
        "/hooks/btcpay", data=body, headers={**signed(body), **CREDENTIALS}
    )
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    coinable = await client.post(f"/hooks/coinable/{WRONG_TOKEN}", data=b"{}")
    assert (await coinable.json()) == {"error": "bad_token"}
    ivpay = await client.post("/hooks/ivpay", data=b"{}", headers={"X-API-KEY": "wrong-key-1"})
    assert ivpay.status == 401
    ghost = await client.post(f"/hooks/ghost/{GHOST_TOKEN}", data=b'{"a": 1}')
    assert ghost.status == 404
    assert await redis.zcard(KEYS.queue) == 0
    ghost_id, ivpay_id, coinable_id, btcpay_id = await recorded_ids(redis)

    raw = await everything_in_redis(redis)
    for secret in (*CREDENTIALS.values(), "wrong-key-1", WRONG_TOKEN, GHOST_TOKEN):
        assert secret.encode() not in raw, secret
    assert body in raw and signed(body)["BTCPay-Sig"].encode() in raw  # kept whole, to verify

    kept = await get_rejected(redis, KEYS, btcpay_id)
    assert kept is not None
    assert kept["status"] == 401 and kept["error"] == "bad_signature"
    assert kept["path"] == "/hooks/btcpay" and kept["method"] == "POST"
    assert kept["body"] == body.decode() and kept["body_bytes"] == len(body)
    assert kept["headers"]["btcpay-sig"] == signed(body)["BTCPay-Sig"][:12] + "…"
    assert kept["headers"]["content-type"] == "application/json"
    assert sorted(kept["dropped_headers"]) == ["authorization", "cookie", "x-api-key"]
    assert kept["client_ip"] == "127.0.0.1"
    ghost_kept = await get_rejected(redis, KEYS, ghost_id)
    assert ghost_kept is not None
    assert ghost_kept["path"] == "/hooks/ghost/…" and ghost_kept["body"] == '{"a": 1}'

    unchanged = write_config(tmp_path, {"sources": sources()}, "unchanged.yaml")
    code, out, _ = await relay(unchanged, redis_url, "replay", btcpay_id)
    assert code == 1
    assert out.splitlines()[0].split() == [btcpay_id, "still_rejected", "401", "bad_signature"]
    assert "BTCPay-Sig matches no configured secret" in out
    assert await redis.hexists(KEYS.rejected, btcpay_id)

    fixed = write_config(tmp_path, {"sources": sources("${BTCPAY_WEBHOOK_SECRET}")}, "fixed.yaml")
    ids = (btcpay_id, coinable_id, ivpay_id, "rj_000000000000deadbeef")
    code, out, err = await relay(fixed, redis_url, "replay", *ids, "--json")
    assert code == 1, err  # some did not pass
    stored, token, api_key, missing = orjson.loads(out)
    assert stored["result"] == "stored" and stored["inbound_id"].startswith("in_")
    assert token["result"] == "cannot_verify" and "URL token" in token["reason"]
    assert api_key["result"] == "cannot_verify" and "x-api-key header" in api_key["reason"]
    assert missing == {"id": "rj_000000000000deadbeef", "result": "not_found"}

    # Stored as the ingress stores a webhook: an arq job with the raw bytes, in the queue.
    assert await redis.zrange(KEYS.queue, 0, -1) == [stored["inbound_id"].encode()]
    job = deserialize(await redis.get(job_key_prefix + stored["inbound_id"]))
    assert job["f"] == "process_inbound" and job["k"]["inbound"]["body"] == body
    assert not await redis.hexists(KEYS.rejected, btcpay_id)
    assert await redis.zscore(KEYS.rejected_index, btcpay_id) is None
    usage = await rejected_usage(redis, KEYS)
    assert usage["count"] == 3
    assert usage["bytes"] == sum(
        [await redis.hstrlen(KEYS.rejected, i) for i in (coinable_id, ivpay_id, ghost_id)]
    )
    # The same bytes once more: the ingress's dedupe answers, and the entry goes too.
    again = await client.post("/hooks/btcpay", data=body, headers=signed(body))
    assert again.status == 401
    (again_id,) = (await recorded_ids(redis))[:1]
    code, out, _ = await relay(fixed, redis_url, "replay", again_id)
    assert code == 0
    assert out.splitlines()[0].split() == [again_id, "duplicate", stored["inbound_id"]]


async def test_list_and_show(ingress: Any, redis: Any, redis_url: str, tmp_path: Path) -> None:
    """Text fits 80 columns and never cuts an id; `--json` is exactly what the query functions
    return; an unknown id is exit 1 with a clear message."""
    raw = {"sources": sources()}
    client = await ingress(raw)
    for number in range(3):
        body = invoice(number, pad=200)
        assert (await client.post("/hooks/btcpay", data=body, headers=signed(body))).status == 401
    binary = await client.post("/hooks/a-source-with-a-rather-long-name-0123456789", data=b"\xff")
    assert binary.status == 404
    config = write_config(tmp_path, raw)
    newest = (await recorded_ids(redis))[0]

    code, out, _ = await relay(config, redis_url, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("4 rejected request(s) kept") and "of 16.0 MiB" in lines[0]
    assert all(len(line) <= 80 for line in lines), out
    for ident in await recorded_ids(redis):
        assert any(ident in line.split() for line in lines), ident
    assert "body over" not in out and "BTCPay-Sig matches no configured" in out

    code, out, _ = await relay(config, redis_url, "list", "--source", "btcpay", "--json")
    assert code == 0
    listed = orjson.loads(out)
    assert listed == await list_rejected(redis, KEYS, source="btcpay")
    assert [item["source"] for item in listed] == ["btcpay"] * 3
    assert "headers" not in listed[0] and "body" not in listed[0]

    code, out, _ = await relay(config, redis_url, "show", newest)
    assert code == 0
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert out.splitlines()[0] == newest
    assert "a-source-with-a-rather-long-name-0123456789" in out
    assert "not UTF-8: --json gives it in base64" in out
    code, out, _ = await relay(config, redis_url, "show", newest, "--json")
    shown = orjson.loads(out)
    assert shown == await get_rejected(redis, KEYS, newest)
    assert shown["body_base64"] == "/w==" and shown["body"] is None

    btcpay_id = (await recorded_ids(redis))[1]
    code, out, _ = await relay(config, redis_url, "show", btcpay_id)
    assert "  btcpay-sig: sha256=" in out and "…" in out
    full = (await get_rejected(redis, KEYS, btcpay_id) or {})["body"]
    assert all(len(line) <= 80 for line in out.splitlines()) and full[:60] in out

    code, _, err = await relay(config, redis_url, "show", "rj_0000000000001234abcd")
    assert code == 1
    assert "no rejected request with id rj_0000000000001234abcd" in err


async def keep_directly(loaded: LoadedConfig, redis: Any, request: RejectedRequest) -> None:
    """Keep a request through the ingress's own writer, with a receipt time of our choosing."""
    keeper = Keeper(redis, KEYS, loaded.config.log)
    await RejectionLog(redis, KEYS, keeper).record(
        request.source, True, 401, "bad_signature", "for the test", "127.0.0.1", request
    )


async def test_the_byte_cap_and_the_retention(
    ingress: Any, redis: Any, config_factory: ConfigFactory
) -> None:
    """Entries older than the retention go first, then the oldest while the total is over
    `log.rejected_max_bytes`; an entry over the whole cap is not kept; a 413 keeps no body."""
    raw = {
        "log": {"rejected_max_bytes": 4096, "rejected_retention": "1m"},
        "server": {"max_body_bytes": 8192},
        "sources": sources(),
    }
    loaded = config_factory(raw)
    await clock.CLOCK.sync(redis)
    old = RejectedRequest("btcpay", "POST", {}, b"{}", "127.0.0.1", clock.now() - 120)
    await keep_directly(loaded, redis, old)
    (old_id,) = await recorded_ids(redis)
    assert await redis.hexists(KEYS.rejected, old_id)

    client = await ingress(raw)
    for number in range(8):
        body = invoice(number, pad=900)
        assert (await client.post("/hooks/btcpay", data=body, headers=signed(body))).status == 401
    sent = (await recorded_ids(redis))[:8]  # newest first
    kept = [item["id"] for item in await list_rejected(redis, KEYS)]
    assert old_id not in kept  # past the retention
    assert 1 < len(kept) < 8
    assert kept == sent[: len(kept)]  # the newest survive
    usage = await rejected_usage(redis, KEYS)
    assert usage["count"] == len(kept)
    assert usage["bytes"] == sum([await redis.hstrlen(KEYS.rejected, i) for i in kept]) <= 4096
    for key in (KEYS.rejected, KEYS.rejected_index):
        assert 0 < await redis.pttl(key) <= 60_000

    big = invoice(99, pad=5000)  # under max_body_bytes, but its entry is over the whole cap
    assert (await client.post("/hooks/btcpay", data=big, headers=signed(big))).status == 401
    assert await redis.llen(KEYS.rejections) == 10  # `relay status` still lists it
    assert [item["id"] for item in await list_rejected(redis, KEYS)] == kept

    large = await client.post("/hooks/btcpay", data=b"x" * 10_000, headers=signed(b"x"))
    assert large.status == 413
    (too_large,) = await list_rejected(redis, KEYS, limit=1)
    assert (too_large["error"], too_large["body_kept"], too_large["body_bytes"]) == (
        "too_large",
        False,
        0,
    )
    (answer,) = await replay_rejected(redis, loaded, [too_large["id"]])
    assert answer["result"] == "cannot_verify" and "body was not kept" in answer["reason"]


async def test_replay_judges_with_the_current_config_and_the_original_receipt(
    ingress: Any, redis: Any, config_factory: ConfigFactory
) -> None:
    """A timestamp is judged against the original receipt; an address refused is refused
    again until the config allows it; an unknown source kept can be replayed once added."""
    partner = {"provider": "standard_webhooks", "secret": "${PARTNER_WHSEC}"}
    fenced = {**btcpay("${BTCPAY_WEBHOOK_SECRET}"), "allowed_ips": ["203.0.113.0/24"]}
    before = config_factory({"sources": {"partner": partner, "fenced": fenced}})
    await clock.CLOCK.sync(redis)
    hour_ago = int(clock.now()) - 3600
    body = orjson.dumps({"type": "invoice.paid", "data": {"id": "p-1"}})
    on_time = RejectedRequest(
        "partner", "POST", whsec_signed(body, "msg_1", hour_ago), body, "127.0.0.1", hour_ago + 2
    )
    late = RejectedRequest(
        "partner", "POST", whsec_signed(body, "msg_2", hour_ago), body, "127.0.0.1", clock.now()
    )
    await keep_directly(before, redis, on_time)
    await keep_directly(before, redis, late)
    late_id, on_time_id = await recorded_ids(redis)
    first, second = await replay_rejected(redis, before, [on_time_id, late_id])
    assert first["result"] == "stored" and first["inbound_id"].startswith("in_")
    assert (second["result"], second["error"]) == ("still_rejected", "stale_timestamp")

    client = await ingress({"sources": {"partner": partner, "fenced": fenced}})
    invoice_body = invoice(7)
    for path in ("/hooks/fenced", "/hooks/newcomer"):
        response = await client.post(path, data=invoice_body, headers=signed(invoice_body))
        assert response.status in (403, 404)
    newcomer_id, fenced_id = (await recorded_ids(redis))[:2]
    (refused,) = await replay_rejected(redis, before, [fenced_id])
    assert (refused["result"], refused["status"]) == ("still_rejected", 403)
    (unknown,) = await replay_rejected(redis, before, [newcomer_id])
    assert (unknown["result"], unknown["error"]) == ("still_rejected", "unknown_source")

    open_fence = {**fenced, "allowed_ips": []}
    after = config_factory(
        {"sources": {"fenced": open_fence, "newcomer": btcpay("${BTCPAY_WEBHOOK_SECRET}")}}
    )
    fenced_answer, newcomer_answer = await replay_rejected(redis, after, [fenced_id, newcomer_id])
    assert fenced_answer["result"] == "stored"
    assert newcomer_answer["result"] == "stored"
    assert fenced_answer["inbound_id"] != newcomer_answer["inbound_id"]  # per source
    assert await redis.zcard(KEYS.queue) == 3
