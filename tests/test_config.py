"""Configuration: interpolation, durations, unknown keys, every error with its path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.config.model import ConfigError, load_config, validate
from relay.config.types import parse_duration
from tests.conftest import REPO

FIVE_MISTAKES = """
sources:
  ivpay:
    provider: ivpay
    api_key: ${UNSET_VARIABLE_FOR_TEST}
    colour: blue
  other:
    provider: nosuchprovider
dedupe:
  window: forever
sinks:
  shop:
    type: http
    url: not a url
    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
"""


def run_relay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5), ("10m", 600), ("2h", 7200), ("3d", 259200), (7, 7.0)],
)
def test_durations(text: object, seconds: float) -> None:
    """Durations in the spec's units parse to seconds."""
    assert parse_duration(text) == seconds


def test_env_interpolation_with_default() -> None:
    """${VAR} takes the environment, ${VAR:-default} the default when unset."""
    loaded = validate(
        {
            "sources": {"ivpay": {"provider": "ivpay", "api_key": "${K}"}},
            "admin": {"token": "${TOKEN:-fallback}"},
        },
        env={"K": "the-key-123"},
    )
    assert loaded.config.sources["ivpay"].api_key == ["the-key-123"]
    assert loaded.config.admin.token == "fallback"
    assert "the-key-123" in loaded.secrets


def test_five_mistakes_reported_with_paths(tmp_path: Path) -> None:
    """`relay check-config` prints every error with its YAML path and exits 2."""
    path = tmp_path / "bad.yaml"
    path.write_text(FIVE_MISTAKES)
    result = run_relay("check-config", str(path))
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert "sources.ivpay.api_key: environment variable UNSET_VARIABLE_FOR_TEST is not set" in err
    assert "sources.ivpay.colour: unknown key" in err
    assert "sources.other.provider: unknown kind 'nosuchprovider'" in err
    assert "dedupe.window: not a duration" in err
    assert "sinks.shop.url: not a valid URL" in err
    assert "(5 error(s))" in err


def test_example_and_dev_configs_are_valid() -> None:
    """The shipped example (with its variables set) and dev configs pass check-config."""
    env = dict.fromkeys(
        (
            "IVPAY_API_KEY",
            "COINPAYMENTS_CLIENT_ID",
            "COINPAYMENTS_CLIENT_SECRET",
            "COINPAYMENTS_IPN_SECRET",
            "COINPAYMENTS_MERCHANT_ID",
            "CALYPSO_SECRET_KEY",
            "CRYPTOIX_WEBHOOK_SECRET",
            "COINABLE_URL_TOKEN",
            "PARTNER_WHSEC",
            "BTCPAY_WEBHOOK_SECRET",
            "COINBASE_WEBHOOK_SECRET",
            "SHOP_WEBHOOK_SECRET",
        ),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    for name in ("PLISIO_SECRET_KEY", "COINGATE_CALLBACK_TOKEN", "OXAPAY_MERCHANT_API_KEY"):
        env[name] = "example-secret-0123456789"
    env["BINANCE_PAY_PUBLIC_KEY"] = (
        REPO / "tests/data/binance_pay/test_public_key.pem"
    ).read_text()
    env["DISCORD_WEBHOOK_URL"] = "https://discord.com/api/webhooks/1/abc"
    env["SLACK_WEBHOOK_URL"] = "https://hooks.slack.com/services/T/B/x"
    import os

    result = run_relay("check-config", "config/relay.example.yaml", env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    result = run_relay("check-config", "config/relay.dev.yaml")
    assert result.returncode == 0, result.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A missing config file is reported, not a traceback."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "no such file" in str(info.value)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    """Broken YAML names the line."""
    path = tmp_path / "broken.yaml"
    path.write_text("sources:\n  a: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line" in str(info.value)


def test_sink_timeout_must_fit_job_timeout() -> None:
    """A sink timeout longer than the worker's job budget is an error at its path."""
    with pytest.raises(ConfigError) as info:
        validate({"sinks": {"l": {"type": "log", "timeout": "60s"}}})
    assert any(path == "sinks.l.timeout" for path, _ in info.value.errors)


def test_unknown_source_in_sink_rules() -> None:
    """A sink that names a source that does not exist is an error."""
    with pytest.raises(ConfigError) as info:
        validate({"sinks": {"l": {"type": "log", "sources": ["ghost"]}}})
    assert info.value.errors == [("sinks.l.sources[0]", "unknown source 'ghost'")]


def test_unset_secrets_get_stand_ins_for_the_redis_only_commands() -> None:
    """SPEC 8: `relay status`, `dlq`, `events`... read the config on a laptop that holds no
    provider or sink secret; each unset ${VAR} gets a value its key accepts."""
    raw = {
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {
            "ops": {"type": "discord", "url": "${DISCORD_WEBHOOK_URL}"},
            "shop": {"type": "http", "url": "https://shop.example/h", "secret": "${SHOP_WHSEC}"},
        },
    }
    with pytest.raises(ConfigError):
        validate(raw, env={})
    loaded = validate(raw, env={}, unset_ok=True)
    assert set(loaded.config.sinks) == {"ops", "shop"}
    assert loaded.config.sources["ivpay"].api_key == ["${IVPAY_API_KEY}"]  # type: ignore[attr-defined]
    broken = {**raw, "sinks": {"ops": {"type": "discord", "url": "not a url"}}}
    with pytest.raises(ConfigError) as caught:
        validate(broken, env={}, unset_ok=True)  # a real mistake is still an error
    assert any(where == "sinks.ops.url" for where, _ in caught.value.errors)
