"""Issue 15: `relay check-config` (and every process at start) catches the mistakes that would
otherwise leave a relay silent: routing that never matches, duplicate keys, no sources, a
mistyped provider kind; each error with its path, its line and a suggestion where one is close."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.config.model import ConfigError, load_config
from tests.conftest import REPO

GOOD_SOURCE = "sources:\n  iv:\n    provider: ivpay\n    api_key: k-123456\n"


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "relay.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_event_globs_that_match_nothing_are_errors(tmp_path: Path) -> None:
    """`payment.payed` and `paid` route nothing: each an error, its line and the close type."""
    text = GOOD_SOURCE + (
        "sinks:\n  shop:\n    type: log\n"
        "    events:\n      - payment.payed\n      - paid\n      - payment.*\n"
        "    sources: [ivv]\n"
    )
    result = check(tmp_path, text)
    assert result.returncode == 2, result.stdout
    err = result.stderr
    assert (
        "sinks.shop.events[0]: 'payment.payed' matches no event type "
        "(did you mean 'payment.paid'?) (line 9)" in err
    )
    assert (
        "sinks.shop.events[1]: 'paid' matches no event type (did you mean 'payment.paid'?)" in err
    )
    assert "events[2]" not in err  # a glob that matches is fine
    assert "sinks.shop.sources[0]: unknown source 'ivv' (did you mean 'iv'?) (line 12)" in err


def test_duplicate_keys_are_an_error_with_both_lines(tmp_path: Path) -> None:
    text = GOOD_SOURCE + "sinks:\n  a:\n    type: log\n  a:\n    type: log\n"
    result = check(tmp_path, text)
    assert result.returncode == 2
    assert "line 8, column 3: not valid YAML: duplicate key 'a' (first on line 6)" in result.stderr


@pytest.mark.parametrize(
    ("text", "what"),
    [("", "the file is empty"), ("sources: []\n", "names none"), ("sinks: {}\n", "names none")],
)
def test_an_empty_or_sourceless_config_is_an_error(tmp_path: Path, text: str, what: str) -> None:
    result = check(tmp_path, text)
    assert result.returncode == 2, result.stdout
    assert "sources: no sources: " in result.stderr and what in result.stderr


def test_unknown_provider_kind_names_the_provider_key(tmp_path: Path) -> None:
    text = GOOD_SOURCE + "  cp:\n    provider: calypsoo\n    secret_key: x\n"
    result = check(tmp_path, text)
    assert result.returncode == 2
    assert (
        "sources.cp.provider: unknown kind 'calypsoo' (did you mean 'calypso'?) (line 6)"
        in result.stderr
    )


def test_every_process_rejects_them_at_load(tmp_path: Path) -> None:
    """The check lives in load_config, which serve, worker and dev all call."""
    path = tmp_path / "relay.yaml"
    path.write_text(GOOD_SOURCE + "sinks:\n  s:\n    type: log\n    events: [paid]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [where for where, _ in caught.value.errors] == ["sinks.s.events[0]"]


def test_secret_lists_as_the_readme_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quoted flow items or a block list load; the unquoted `[${A}, ${B}]` is a YAML error."""
    monkeypatch.setenv("A", "key-aaaaaa")
    monkeypatch.setenv("B", "key-bbbbbb")
    path = tmp_path / "relay.yaml"
    for api_key in ('["${A}", "${B}"]', "\n      - ${A}\n      - ${B}"):
        path.write_text(f"sources:\n  iv:\n    provider: ivpay\n    api_key: {api_key}\n")
        source: Any = load_config(path).config.sources["iv"]
        assert source.api_key == ["key-aaaaaa", "key-bbbbbb"]
    path.write_text("sources:\n  iv:\n    provider: ivpay\n    api_key: [${A}, ${B}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "not valid YAML" in str(caught.value)
