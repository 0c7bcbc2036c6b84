"""The one YAML file -> a validated, frozen `RelayConfig`, or every error with its YAML path."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relay.config.alerts import UNKNOWN_RULE, AlertsConfig, alert_checks
from relay.config.env import interpolate, path_str
from relay.config.types import Duration, RetryConfig, SinkConfig, SourceConfig, Strict
from relay.config.yaml_loader import line_of, load_yaml
from relay.events import EVENT_TYPES
from relay.providers import PROVIDERS
from relay.redis import SENTINEL_SCHEME, parse_sentinel_url
from relay.sinks import SINKS

DEFAULT_PATH = "config/relay.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ServerConfig(Strict):
    max_body_bytes: int = Field(default=262_144, ge=1024, le=64 * 1024 * 1024)
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    redis_timeout: Duration = 2.0  # slower than this and ingress answers 503
    # Above this fraction of Redis's maxmemory (and at least 4 MiB below it) the ingress
    # answers 503: the rest is headroom the workers need to drain (under noeviction a full
    # Redis refuses their writes too). relay.redis_memory.shed_at_bytes.
    shed_memory_ratio: float = Field(default=0.9, ge=0.5, le=0.99)


class AdminConfig(Strict):
    token: str = ""


class DedupeConfig(Strict):
    window: Duration = 72 * 3600.0


class WorkerConfig(Strict):
    concurrency: int = Field(default=200, ge=1, le=5000)
    poll_delay: Duration = 0.05
    job_timeout: Duration = 25.0  # a SIGKILLed worker's jobs run again job_timeout + 10 s later


class DlqConfig(Strict):
    max_entries: int = Field(default=100_000, ge=100)


class LogConfig(Strict):
    """The event log (SPEC 9): what the relay remembers of each payment, and for how long."""

    enabled: bool = True  # off: no history (benchmarks compare the cost); pause still works
    retention: Duration = Field(default=7 * 86400.0, ge=60.0)
    rejected_max_bytes: int = Field(default=16 * 1024 * 1024, ge=0, le=1024 * 1024 * 1024)
    rejected_retention: Duration = Field(default=86400.0, ge=60.0)


def _sources_union() -> Any:
    configs = tuple(cls.Config for cls in PROVIDERS.values())
    return Annotated[Union[configs], Field(discriminator="provider")]  # noqa: UP007


def _sinks_union() -> Any:
    configs = tuple(cls.Config for cls in SINKS.values())
    return Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007


class RelayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str = ""
    key_prefix: str = "relay"
    # Start even when Redis's maxmemory-policy may evict keys (queued webhooks with them).
    allow_redis_eviction: bool = False
    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    dedupe: DedupeConfig = DedupeConfig()
    worker: WorkerConfig = WorkerConfig()
    dlq: DlqConfig = DlqConfig()
    log: LogConfig = LogConfig()
    retry: RetryConfig = RetryConfig()
    alerts: AlertsConfig = AlertsConfig()  # SPEC 12: relay.config.alerts
    sources: dict[str, _sources_union()] = Field(default_factory=dict)  # type: ignore[valid-type]
    sinks: dict[str, _sinks_union()] = Field(default_factory=dict)  # type: ignore[valid-type]

    @field_validator("sources", "sinks")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a valid name (letters, digits, _ . -)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://", SENTINEL_SCHEME)):
            raise ValueError(
                "not a Redis URL (redis://, rediss://, unix:// or redis+sentinel://h:26379/name)"
            )
        if value.startswith(SENTINEL_SCHEME):
            parse_sentinel_url(value)  # its ValueError is the message
        return value

    def retry_for(self, sink: SinkConfig) -> RetryConfig:
        return sink.retry or self.retry


@dataclass
class LoadedConfig:
    config: RelayConfig
    path: str
    secrets: set[str] = field(default_factory=set)  # values the logger must never print

    @property
    def redis_url(self) -> str:
        return self.config.redis_url or os.environ.get("REDIS_URL", "")


class ConfigError(Exception):
    def __init__(self, path: str, errors: list[tuple[str, str]]) -> None:
        self.path = path
        self.errors = errors
        super().__init__("\n".join(f"{p}: {m}" for p, m in errors))


def _loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # A discriminated union adds the tag to the path (sources.x.ivpay.api_key): drop it.
    if len(loc) >= 3 and loc[0] in ("sources", "sinks") and loc[2] in (*PROVIDERS, *SINKS):
        loc = (*loc[:2], *loc[3:])
    return loc


def _message(error: Mapping[str, Any]) -> str:
    kind, msg = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        a_rule = len(error["loc"]) == 2 and error["loc"][0] == "alerts"  # alerts.<rule>
        return UNKNOWN_RULE if a_rule else "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        allowed = error.get("ctx", {}).get("expected_tags")
        close = difflib.get_close_matches(str(tag), (*PROVIDERS, *SINKS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {allowed}"
        return f"unknown kind {tag!r} ({hint})"
    if kind == "union_tag_not_found":
        return f"missing `{error.get('ctx', {}).get('discriminator', '').strip(chr(39))}` key"
    return msg.removeprefix("Value error, ")


# What an unset `${VAR}` becomes for the commands that only read or steer Redis (SPEC 8):
# the reference itself first, then values each kind of key accepts, tried in turn per key.
_STAND_INS = (
    "${{{name}}}",
    "https://unset.invalid/{name}",
    "whsec_dW5zZXQtc2VjcmV0LXN0YW5kLWluLWZvci10b29scyE=",
)


def validate(
    raw: Any,
    path: str = "<config>",
    env: Mapping[str, str] | None = None,
    *,
    unset_ok: bool = False,
) -> LoadedConfig:
    """The validated config, or ConfigError with every error and its path. `unset_ok`: an
    unset `${VAR}` is no error but a stand-in value (for `relay status`, `events`, ...,
    which never use a secret: an operator's laptop does not hold them)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path, [("(top level)", "the file must hold a YAML mapping")])
    if unset_ok:
        return _with_stand_ins(raw, path, env)
    tree, errors, from_env = interpolate(raw, env)
    config: RelayConfig | None = None
    try:
        config = RelayConfig.model_validate(tree)
    except ValidationError as exc:
        unset = {where for where, _ in errors}  # an unset variable explains its own key's error
        for error in exc.errors():
            where = path_str(_loc(tuple(error["loc"])))
            if error["type"] == "union_tag_invalid":  # the key to change (SPEC 8)
                where += ".provider" if where.startswith("sources.") else ".type"
            if where not in unset:
                errors.append((where, _message(error)))
    if config is not None:
        errors.extend(_cross_checks(config))
    if errors or config is None:
        raise ConfigError(path, errors)
    return LoadedConfig(config=config, path=path, secrets=_secret_values(config) | from_env)


def _with_stand_ins(raw: dict[str, Any], path: str, env: Mapping[str, str] | None) -> LoadedConfig:
    choice: dict[str, int] = {}

    def stand_in(where: str, name: str) -> str:
        return _STAND_INS[choice.setdefault(where, 0)].format(name=name)

    for _ in _STAND_INS:
        tree, _errors, _ = interpolate(raw, env, stand_in)
        try:
            config = RelayConfig.model_validate(tree)
        except ValidationError as exc:
            wrong = {path_str(_loc(tuple(e["loc"]))) for e in exc.errors()} & set(choice)
            if not wrong or any(choice[w] + 1 >= len(_STAND_INS) for w in wrong):
                break
            for where in wrong:
                choice[where] += 1
            continue
        return LoadedConfig(config=config, path=path, secrets=_secret_values(config))
    return validate(raw, path, env)  # the errors as they are


def load_config(
    path: str | os.PathLike[str] | None = None, *, unset_ok: bool = False
) -> LoadedConfig:
    resolved = str(path or os.environ.get("RELAY_CONFIG") or DEFAULT_PATH)
    try:
        text = Path(resolved).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(resolved, [("(file)", f"no such file: {resolved}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(resolved, [("(file)", f"cannot read: {exc}")]) from None
    try:
        raw, lines = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(
            resolved, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]
        ) from None
    # The processes and check-config; the read/steer commands (unset_ok) read Redis anyway.
    if not unset_ok and (raw is None or (isinstance(raw, dict) and not raw.get("sources"))):
        what = "the file is empty" if raw is None else "`sources:` names none"
        raise ConfigError(
            resolved, [("sources", f"no sources: {what}; the relay would accept no webhook")]
        )
    try:
        return validate(raw, resolved, unset_ok=unset_ok)
    except ConfigError as exc:  # each error with its YAML line where the file has the key
        for index, (where, message) in enumerate(exc.errors):
            line = line_of(lines, where)
            exc.errors[index] = (where, f"{message} (line {line})" if line else message)
        raise


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _event_checks(name: str, sink: SinkConfig) -> list[tuple[str, str]]:
    """An `events:` glob that matches no event type of SPEC 4 routes nothing, forever."""
    errors: list[tuple[str, str]] = []
    short = {t.removeprefix("payment."): t for t in EVENT_TYPES}
    for index, pattern in enumerate(sink.events):
        if any(fnmatchcase(t, pattern) for t in EVENT_TYPES):
            continue
        close = difflib.get_close_matches(pattern, [*EVENT_TYPES, *short], n=1)
        hint = f" (did you mean {short.get(close[0], close[0])!r}?)" if close else ""
        errors.append((f"sinks.{name}.events[{index}]", f"{pattern!r} matches no event type{hint}"))
    return errors


def _cross_checks(config: RelayConfig) -> list[tuple[str, str]]:
    """Rules that span sections, reported with the path of the key to change."""
    errors: list[tuple[str, str]] = []
    budget = config.worker.job_timeout - 5
    for name, sink in config.sinks.items():
        if sink.timeout > budget:
            errors.append(
                (
                    f"sinks.{name}.timeout",
                    (
                        f"{sink.timeout:g}s does not fit inside "
                        f"worker.job_timeout ({config.worker.job_timeout:g}s) minus 5s"
                    ),
                )
            )
        for index, source in enumerate(sink.sources or []):
            if source not in config.sources:
                hint = _did_you_mean(source, config.sources)
                errors.append(
                    (f"sinks.{name}.sources[{index}]", f"unknown source {source!r}{hint}")
                )
        errors.extend(_event_checks(name, sink))
    errors.extend(alert_checks(config))
    return errors


_SECRET_KEYS = re.compile(r"(secret|token|key|password|url)$")


def _secret_values(config: RelayConfig) -> set[str]:
    """Every configured value that could be a credential; webhook URLs carry tokens too."""
    found: set[str] = set()

    def walk(node: Any, key: str) -> None:
        if isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name), name)
        elif isinstance(node, dict):
            for k, v in node.items():
                # A sink's custom headers often carry credentials (Authorization: Bearer ...).
                walk(v, "secret" if key == "headers" else str(k))
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and len(node) >= 6 and _SECRET_KEYS.search(key):
            found.add(node)

    for section in (config.sources, config.sinks, config.admin):
        walk(section, "")
    if config.redis_url:
        found.add(config.redis_url)
    return found


__all__ = [
    "ConfigError",
    "LoadedConfig",
    "RelayConfig",
    "SinkConfig",
    "SourceConfig",
    "load_config",
    "validate",
]
