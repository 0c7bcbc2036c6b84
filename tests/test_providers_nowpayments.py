"""NOWPayments: `x-nowpayments-sig`, HMAC-SHA512 of the IPN re-serialized with sorted keys as
NOWPayments' own code writes it (Node SDK, docs' sortObject, docs' PHP and Python examples).

Signatures here come from tests/data/nowpayments/vectors.json, computed by Node itself
(make_vectors.js: the SDK's algorithm) and PHP itself (make_vectors.php: the docs' PHP check),
or by Python's own json module for the docs' Python form; never by the provider's `sample()`.
What the ingress rejects is in tests/test_provider_rejections.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from arq.jobs import deserialize_job

from relay.providers import PROVIDERS, InboundRequest, Provider, Rejected, jsonforms
from relay.queue import deserialize, job_to_request
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "nowpayments"
VECTORS = {v["file"]: v for v in json.loads((DATA / "vectors.json").read_text())}
SECRET = "nowpayments-test-ipn-secret-0001"  # the vectors' secret
SOURCE = {"provider": "nowpayments", "ipn_secret": [SECRET, "nowpayments-old-ipn-secret"]}
CONFIG = {"sources": {"nowpayments": SOURCE}}
FINISHED = (DATA / "ipn_finished_docs.json").read_bytes()
WAITING = (DATA / "ipn_waiting_docs.json").read_bytes()
PARTIAL = (DATA / "ipn_partially_paid_unicode.json").read_bytes()
TX = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"


def provider(secret: str | list[str] = SOURCE["ipn_secret"]) -> Provider:
    loaded = make_config({"sources": {"np": {"provider": "nowpayments", "ipn_secret": secret}}})
    return PROVIDERS["nowpayments"]("np", loaded.config.sources["np"])


def header(signature: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "x-nowpayments-sig": signature}


def python_docs_signature(body: bytes, secret: str = SECRET) -> str:
    """The docs' Python example: json.dumps(separators=(',', ':'), sort_keys=True)."""
    form = json.dumps(json.loads(body), separators=(",", ":"), sort_keys=True)
    return hmac.new(secret.encode(), form.encode(), hashlib.sha512).hexdigest()


def verify(body: bytes, signature: str) -> None:
    provider().verify(
        InboundRequest(source="np", body=body, headers={"x-nowpayments-sig": signature})
    )


def normalize(body: bytes) -> Any:
    (event,) = provider().normalize(
        InboundRequest(source="np", body=body, headers={}, received_at=1.0)
    )
    return event


async def stored(redis: Any, inbound_id: str) -> InboundRequest:
    job = deserialize_job(await redis.get(f"arq:job:{inbound_id}"), deserializer=deserialize)
    return job_to_request(job.kwargs["inbound"])


@pytest.mark.parametrize("name", list(VECTORS))
def test_vectors_made_by_node_and_php_verify(name: str) -> None:
    """Each body verifies under the signature Node computed (the SDK's way), the one PHP
    computed (the docs' PHP way) and the docs' Python way; the relay writes both forms byte
    for byte as Node and PHP did."""
    vector = VECTORS[name]
    body = (DATA / name).read_bytes()
    value = jsonforms.parse_exact(body)
    assert jsonforms.js_stringify(value, sort_keys=True) == vector["node_form"]
    php = jsonforms.php_json_encode(value, sort_keys=True, escape_slashes=False)
    assert php == vector["php_form"]
    for signature in (vector["node_signature"], vector["php_signature"]):
        verify(body, signature)
        verify(body, signature.upper())
    verify(body, python_docs_signature(body))


def test_node_and_php_differ_where_json_writers_do() -> None:
    r"""Why the forms are written exactly: for one IPN with tiny amounts and non-ASCII text,
    Node writes 0.00002 and raw UTF-8, PHP 2.0e-5 and \u escapes: two different signatures."""
    vector = VECTORS["ipn_partially_paid_unicode.json"]
    assert '"actually_paid":0.00002' in vector["node_form"]
    assert '"actually_paid":2.0e-5' in vector["php_form"]
    assert "Größe" in vector["node_form"] and "Gr\\u00f6\\u00dfe" in vector["php_form"]
    assert vector["node_signature"] != vector["php_signature"]


async def test_ipn_is_stored_and_normalizes(ingress: Any, redis: Any) -> None:
    """An IPN signed as NOWPayments' SDK signs it goes through the real ingress and becomes
    payment.review (partially paid) with exact amounts, currency, order id and tx hash."""
    client = await ingress(CONFIG)
    signature = VECTORS["ipn_partially_paid_unicode.json"]["node_signature"]
    response = await client.post("/hooks/nowpayments", data=PARTIAL, headers=header(signature))
    assert response.status == 200, await response.text()
    (event,) = provider().normalize(await stored(redis, (await response.json())["id"]))
    assert (event.type, event.payment.review_reason) == ("payment.review", "underpaid")
    assert (event.payment.id, event.payment.reference) == ("4522625843", "Bestellung/4711")
    assert (event.payment.amount, event.payment.currency) == ("0.00071", "btc")
    assert event.payment.amount_received == "0.00002"
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("42.5", "eur")
    assert event.payment.tx_hash == TX
    assert event.payment.description == "Kaffeebohnen – 1 kg, Größe L ☕"
    assert event.occurred_at == "2026-01-05T10:20:00.001Z"


def test_docs_examples_normalize() -> None:
    finished = normalize(FINISHED)
    assert (finished.type, finished.payment.amount, finished.payment.currency) == (
        "payment.completed",
        "15",
        "trx",
    )
    assert (finished.payment.amount_received, finished.payment.id) == ("15", "123456789")
    waiting = normalize(WAITING)
    assert (waiting.type, waiting.payment.reference, waiting.payment.amount) == (
        "payment.created",
        "2",
        "155.38559757",
    )


@pytest.mark.parametrize(
    ("status", "expected", "reason"),
    [
        ("waiting", "created", None),
        ("confirming", "pending", None),
        ("confirmed", "paid", None),
        ("sending", "paid", None),
        ("finished", "completed", None),
        ("partially_paid", "review", "underpaid"),
        ("failed", "failed", None),
        ("refunded", "review", "other"),
        ("expired", "expired", None),
        ("FINISHED", "completed", None),
        ("mystery", "other", None),
    ],
)
def test_status_table(status: str, expected: str, reason: str | None) -> None:
    body = json.dumps({**json.loads(WAITING), "payment_status": status}).encode()
    event = normalize(body)
    assert (event.type, event.payment.review_reason) == (f"payment.{expected}", reason)


def test_payout_ipn_is_other() -> None:
    """The docs' withdrawal IPN (`batch_withdrawal_id`, `status`) is not a payment."""
    payout = {"id": "123456789", "batch_withdrawal_id": "987654321", "status": "CREATING"}
    event = normalize(json.dumps({**payout, "currency": "usdttrc20", "amount": "50"}).encode())
    assert (event.type, event.provider_event, event.payment.amount) == (
        "payment.other",
        "CREATING",
        "50",
    )


def test_repeat_is_one_event_and_partial_payments_two() -> None:
    """NOWPayments' recurrent notifications repeat an IPN (any layout: the signature covers
    the content): one event. A second partial payment raises actually_paid, or comes as a
    repeated deposit with its own payment_id and parent_payment_id: each a new event."""
    payload = json.loads(PARTIAL)
    repeated = json.dumps(dict(reversed(list(payload.items()))), indent=1).encode()
    verify(repeated, VECTORS["ipn_partially_paid_unicode.json"]["node_signature"])
    assert normalize(repeated).id == normalize(PARTIAL).id
    more = json.dumps({**payload, "actually_paid": 0.00005}).encode()
    deposit = {**payload, "payment_id": 4522625899, "parent_payment_id": 4522625843}
    redeposit = json.dumps({**deposit, "payin_hash": "f" * 64}).encode()
    assert len({normalize(PARTIAL).id, normalize(more).id, normalize(redeposit).id}) == 3


def test_nested_fields_are_signed() -> None:
    """A changed nested fee breaks the signature; the docs' old replacer-array one-liner, which
    would not sign nested keys, is not accepted."""
    vector = VECTORS["ipn_finished_docs.json"]
    payload = json.loads(FINISHED)
    payload["fee"]["depositFee"] = 0
    with pytest.raises(Rejected):
        verify(json.dumps(payload).encode(), vector["node_signature"])
    replacer_form = json.dumps(
        {k: ({} if isinstance(v, dict) else v) for k, v in sorted(json.loads(FINISHED).items())},
        separators=(",", ":"),
    )
    replacer_sig = hmac.new(SECRET.encode(), replacer_form.encode(), hashlib.sha512).hexdigest()
    with pytest.raises(Rejected):
        verify(FINISHED, replacer_sig)


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b"", b'{"a": 1e999}'[:-1]])
def test_what_is_not_a_json_object_is_unauthenticated(body: bytes) -> None:
    with pytest.raises(Rejected) as info:
        verify(body, "ab" * 64)
    assert (info.value.status, info.value.error) == (401, "bad_signature")


def test_a_body_larger_than_any_ipn_is_not_worked_on() -> None:
    """Writing 64 KiB again costs far more than an HMAC: refused before any parsing."""
    body = json.dumps({**json.loads(WAITING), "order_description": "x" * 70_000}).encode()
    with pytest.raises(Rejected, match="larger than any IPN"):
        verify(body, python_docs_signature(body))


@pytest.mark.parametrize("event", PROVIDERS["nowpayments"].sample_events)
def test_sample_verifies_and_normalizes(event: str) -> None:
    made = provider()
    sample = made.sample(event, time.time())
    sent = {k.lower(): v for k, v in sample.headers.items()}
    made.verify(InboundRequest(source="np", body=sample.body, headers=sent))
    assert sent["x-nowpayments-sig"] == python_docs_signature(sample.body)
    (normalized,) = made.normalize(InboundRequest(source="np", body=sample.body, headers={}))
    assert normalized.type == f"payment.{event}"


# --- the writers against the real thing, where this machine has Node and PHP ----------------

_NUMBERS = [
    "0",
    "-0",
    "1.0",
    "1e21",
    "1e-7",
    "0.000001",
    "155.38559757",
    "5e-324",
    "2.50",
    "9007199254740993",
    "18446744073709551616",
    "1e400",
    "0.0001",
    "1.5e16",
    "1e17",
]
_TEXTS = [
    "a",
    "/",
    "é",
    "😀",
    "\\u2028",
    "\\u0001",
    "\\n",
    "\\\\",
    '\\"',
    "\\ud800",
    "中",
    "\\u007f",
]
_KEYS = ["a", "B", "10", "9", "0", "01", "-1", "é", "😀", "Z", "__proto__", "4294967295"]


def _value(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if depth > 2 or roll < 0.4:
        return rng.choice(_NUMBERS)
    if roll < 0.7:
        return '"' + rng.choice(_TEXTS) + rng.choice(_TEXTS) + '"'
    if roll < 0.85:
        return "[" + ",".join(_value(rng, depth + 1) for _ in range(rng.randint(0, 3))) + "]"
    return _object(rng, depth + 1)


def _object(rng: random.Random, depth: int = 0) -> str:
    keys = rng.sample(_KEYS, rng.randint(0, 5))
    return "{" + ",".join(f'"{k}":{_value(rng, depth)}' for k in keys) + "}"


CASES = [_object(random.Random(seed)) for seed in range(300)]
NODE = """const c=JSON.parse(require('fs').readFileSync(0,'utf8'));
const d=v=>Array.isArray(v)?v.map(d):(v&&typeof v==='object')?Object.keys(v).sort().reduce((r,k)=>{r[k]=d(v[k]);return r},{}):v;
process.stdout.write(JSON.stringify(c.map(s=>JSON.stringify(d(JSON.parse(s))))));"""
PHP = """function t(&$a){ksort($a);foreach($a as &$v){if(is_array($v))t($v);}}
$o=[];foreach(json_decode(file_get_contents('php://stdin'),true) as $s){$d=json_decode($s,true);
if($d===null&&json_last_error()){$o[]=null;continue;}t($d);$e=json_encode($d,JSON_UNESCAPED_SLASHES);
$o[]=$e===false?null:$e;}echo json_encode($o);"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node")
def test_js_form_is_what_node_writes() -> None:
    answer = subprocess.run(
        ["node", "-e", NODE], input=json.dumps(CASES), capture_output=True, text=True, check=True
    )
    for case, expected in zip(CASES, json.loads(answer.stdout), strict=True):
        assert (
            jsonforms.js_stringify(jsonforms.parse_exact(case.encode()), sort_keys=True) == expected
        ), case


@pytest.mark.skipif(shutil.which("php") is None, reason="needs PHP")
def test_php_form_is_what_php_writes() -> None:
    answer = subprocess.run(
        ["php", "-r", PHP], input=json.dumps(CASES), capture_output=True, text=True, check=True
    )
    for case, expected in zip(CASES, json.loads(answer.stdout), strict=True):
        value = jsonforms.parse_exact(case.encode())
        assert jsonforms.php_json_encode(value, sort_keys=True, escape_slashes=False) == expected, (
            case
        )


def test_numbers_are_written_as_javascript_and_php_write_them() -> None:
    cases = {
        "0.00001": ("0.00001", "1.0e-5"),
        "1e-7": ("1e-7", "1.0e-7"),
        "1E21": ("1e+21", "1.0e+21"),
        "100.0": ("100", "100"),
        "-0.0": ("0", "-0"),
        "123456789012345678901": ("123456789012345680000", "1.2345678901234568e+20"),
    }
    for text, (js, php) in cases.items():
        value = jsonforms.parse_exact(text.encode())
        assert isinstance(value, (int, Decimal))
        assert (jsonforms.js_number(value), jsonforms.php_json_encode(value)) == (js, php)
