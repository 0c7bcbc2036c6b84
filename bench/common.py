"""Shared machinery for the benchmarks: processes, ports, Redis, configs, signed requests.

Everything talks to 127.0.0.1 only. Every process a benchmark starts is registered in a
`Procs` group and stopped (SIGTERM, then SIGKILL) when the group closes, by its own pid.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil
import yaml

from relay.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
PY = sys.executable
RELAY = str(Path(PY).parent / "relay")
HOST = "127.0.0.1"
PREFIX = "bench"

IVPAY_KEY = "bench-ivpay-api-key-0001"
HMAC_SECRET = "bench-hmac-secret-0001"
HMAC_HEADER = "X-Bench-Sig"
WHSEC = "whsec_" + base64.b64encode(b"bench-standard-webhooks-key-32b!").decode()

NCPU = os.cpu_count() or 1


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- CPU placement --------------------------------------------------------------------------
# On a 2-core box: the server under test on CPU 0, the load client and Redis on the last CPU.
# The same placement for every server in a comparison.


def cpus_server() -> set[int]:
    return {0}


def cpus_client() -> set[int]:
    return {NCPU - 1}


def pin(pid: int, cpus: set[int] | None) -> None:
    if cpus and NCPU >= 2:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(5)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Procs:
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
        stdout_file: bool = True,
    ) -> Proc:
        log_path = self.workdir / f"{name}.log"
        out = open(log_path, "ab") if stdout_file else subprocess.DEVNULL  # noqa: SIM115
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=str(REPO)
        )
        if stdout_file:
            out.close()
        pin(popen.pid, cpus)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


@contextlib.contextmanager
def workspace(name: str) -> Iterator[tuple[Path, Procs]]:
    """A temp directory and a process group, torn down on exit."""
    with tempfile.TemporaryDirectory(prefix=f"payrelay-bench-{name}-") as tmp:
        procs = Procs(Path(tmp))
        try:
            yield Path(tmp), procs
        finally:
            procs.close()


@contextlib.contextmanager
def redis_server(directory: Path, cpus: set[int] | None = None) -> Iterator[EmbeddedRedis]:
    """An EmbeddedRedis with append-only on (as production), on a free port."""
    server = EmbeddedRedis(directory / "redis", appendonly=True).start()
    assert server.process is not None
    pin(server.process.pid, cpus)
    try:
        yield server
    finally:
        server.stop()


def wait_http(
    port: int, path: str = "/healthz", timeout: float = 30.0, proc: Proc | None = None
) -> None:
    """Wait until GET path answers (any HTTP status) on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as sock:
                sock.sendall(request)
                if sock.recv(16).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on {HOST}:{port}{path} within {timeout}s")


# --- RSS sampling ---------------------------------------------------------------------------


class RssSampler:
    """Samples RSS of named processes every `interval` s in a thread; keeps start, peak, last."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.procs: dict[str, psutil.Process] = {}
        self.stats: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def watch(self, name: str, pid: int) -> None:
        with self._lock, contextlib.suppress(psutil.Error):
            self.procs[name] = psutil.Process(pid)
        self._sample_one(name)

    def _sample_one(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None:
            return
        try:
            rss = proc.memory_info().rss / 2**20
        except psutil.Error:
            return
        entry = self.stats.setdefault(name, {"start_mib": rss, "peak_mib": rss, "last_mib": rss})
        entry["peak_mib"] = max(entry["peak_mib"], rss)
        entry["last_mib"] = rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                names = list(self.procs)
            for name in names:
                self._sample_one(name)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def reset_start(self) -> None:
        """Take the current RSS as the start (after start-up, not mid-import)."""
        for entry in self.stats.values():
            entry["start_mib"] = entry["last_mib"]

    def result(self) -> dict[str, dict[str, float]]:
        return {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in self.stats.items()}


# --- requests the providers accept ----------------------------------------------------------


def registered_providers() -> list[str]:
    from relay.providers import PROVIDERS

    return sorted(PROVIDERS)


def registered_sinks() -> list[str]:
    from relay.sinks import SINKS

    return sorted(SINKS)


def hmac_source_kind() -> str | None:
    """An HMAC-signed provider registered right now: the generic `hmac`, else calypso."""
    providers = registered_providers()
    for kind in ("hmac", "calypso"):
        if kind in providers:
            return kind
    return None


def token(seq: int, sent_ns: int | None = None) -> str:
    """A payment id that carries its send time, so any sink's message tells its own latency."""
    sent_ns = time.time_ns() if sent_ns is None else sent_ns
    return f"bp{sent_ns}x{seq}"


def ivpay_request(seq: int, sent_ns: int | None = None) -> tuple[bytes, dict[str, str]]:
    pid = token(seq, sent_ns)
    body = json.dumps(
        {
            "payment_id": pid,
            "status": "PAID",
            "foreign_id": pid,
            "amount": "0.123456789012345678",
            "currency": "ETH",
            "network": "ETH",
            "processed_at": int(time.time()),
            "tx_url": "https://etherscan.io/tx/0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad4"
            "3550bfbaf41bb1",
        },
        separators=(",", ":"),
    ).encode()
    return body, {"Content-Type": "application/json", "X-API-KEY": IVPAY_KEY}


def hmac_request(seq: int, sent_ns: int | None = None) -> tuple[bytes, dict[str, str]]:
    pid = token(seq, sent_ns)
    body = json.dumps(
        {
            "id": f"evt{seq}",
            "type": "InvoiceSettled",
            "invoiceId": pid,
            "metadata": {"orderId": pid},
            "amount": "0.123456789012345678",
            "currency": "BTC",
        },
        separators=(",", ":"),
    ).encode()
    sig = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", HMAC_HEADER: "sha256=" + sig}


REQUESTS = {"ivpay": ivpay_request, "hmac": hmac_request}


# --- relay config ---------------------------------------------------------------------------


def source_configs() -> dict[str, Any]:
    sources: dict[str, Any] = {"ivpay": {"provider": "ivpay", "api_key": IVPAY_KEY}}
    if "hmac" in registered_providers():
        sources["hmac"] = {
            "provider": "hmac",
            "secret": HMAC_SECRET,
            "signature_header": HMAC_HEADER,
            "signature_prefix": "sha256=",
            "encoding": "hex",
            "fields": {
                "payment_id": "invoiceId",
                "event": "type",
                "reference": "metadata.orderId",
                "amount": "amount",
                "currency": "currency",
            },
            "event_types": {"InvoiceSettled": "payment.completed"},
        }
    return sources


def sink_configs(
    sink_port: int, retry: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Three sinks on the fake sink server: http, discord, slack. A sink type not registered
    right now is replaced by an http sink under the same name (and said so in the notes)."""
    from relay.config.model import ConfigError, validate

    base = f"http://{HOST}:{sink_port}"
    wanted = {
        "http": {"type": "http", "url": f"{base}/http", "secret": WHSEC, "timeout": "10s"},
        "discord": {
            "type": "discord",
            "url": f"{base}/discord/api/webhooks/1/bench",
            "project": "Bench Store",
        },
        "slack": {"type": "slack", "url": f"{base}/slack/services/T0/B0/bench"},
    }
    notes: list[str] = []
    sinks: dict[str, Any] = {}
    for name, cfg in wanted.items():
        cfg = dict(cfg)
        if retry:
            cfg["retry"] = retry
        try:
            validate({"redis_url": "redis://127.0.0.1:1/0", "sinks": {name: cfg}}, "<bench>")
        except ConfigError as exc:
            fallback = {"type": "http", "url": f"{base}/{name}", "secret": WHSEC}
            if retry:
                fallback["retry"] = retry
            notes.append(
                f"sink type `{cfg['type']}` unusable here ({_first_error(exc)}): "
                f"an http sink stands in for `{name}`"
            )
            cfg = fallback
        sinks[name] = cfg
    return sinks, notes


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        where, message = errors[0]
        return f"{where}: {message}"
    return str(exc)[:120]


def write_config(
    directory: Path,
    redis_url: str,
    sinks: dict[str, Any] | None = None,
    concurrency: int | None = None,
    poll_delay: str | None = None,
    retry: dict[str, Any] | None = None,
) -> Path:
    raw: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": PREFIX,
        "sources": source_configs(),
        "sinks": sinks or {},
    }
    worker: dict[str, Any] = {}
    if concurrency:
        worker["concurrency"] = concurrency
    if poll_delay:
        worker["poll_delay"] = poll_delay
    if worker:
        raw["worker"] = worker
    if retry:
        raw["retry"] = retry
    path = directory / "relay.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def event_loop() -> str:
    """The event loop `relay serve` and `relay worker` run on (`relay.cli.common.fast_event_loop`):
    uvloop when it is installed, else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return "asyncio (uvloop not installed)"
    return f"uvloop {uvloop.__version__}"


def start_ingress(
    procs: Procs,
    config: Path,
    port: int,
    cpus: set[int] | None = None,
    name: str = "web",
    log_level: str = "INFO",
) -> Proc:
    proc = procs.start(
        name,
        [RELAY, "serve", "--config", str(config), "--host", HOST, "--port", str(port)],
        env={"LOG_LEVEL": log_level},
        cpus=cpus,
    )
    wait_http(port, "/healthz", proc=proc)
    return proc


def start_worker(
    procs: Procs,
    config: Path,
    name: str = "worker",
    cpus: set[int] | None = None,
    log_level: str = "INFO",
) -> Proc:
    return procs.start(
        name, [RELAY, "worker", "--config", str(config)], env={"LOG_LEVEL": log_level}, cpus=cpus
    )


def start_sink_server(procs: Procs, port: int, cpus: set[int] | None = None) -> Proc:
    proc = procs.start("sinks", [PY, "-m", "bench.sinks_server", "--port", str(port)], cpus=cpus)
    wait_http(port, "/stats", proc=proc)
    return proc


# --- results --------------------------------------------------------------------------------


def save_result(part: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    data = {"part": part, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **data}
    path = RESULTS_DIR / f"{part}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def load_results() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if RESULTS_DIR.exists():
        for path in sorted(RESULTS_DIR.glob("*.json")):
            with contextlib.suppress(ValueError):
                out[path.stem] = json.loads(path.read_text())
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine() -> dict[str, Any]:
    import aiohttp
    import redis

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        rv = subprocess.run(
            [__import__("relay.embedded").embedded.redis_server_binary(), "--version"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        rv = "?"
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
        wrk_v = (wrk.stdout or wrk.stderr).splitlines()[0]
    except Exception:  # noqa: BLE001
        wrk_v = "not installed"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "relay", "workers"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        commit, dirty = "?", ""
    return {
        "cpu": cpu,
        "cpus": NCPU,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "arq": _v("arq"),
        "redis_py": redis.__version__,
        "redis_server": rv,
        "wrk": wrk_v,
        "event_loop": event_loop(),
        "git": commit + (" (relay/ or workers/ modified in the work tree)" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def rand_suffix() -> str:
    return secrets.token_hex(4)


def _v(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# --- other processes' CPU (this box may be shared) ------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """User + nice + system CPU seconds of the whole machine (irq/softirq/steal left out)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return (user + nice + system) / _TICK


def _steal_seconds() -> float:
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    return int(fields[7]) / _TICK if len(fields) > 7 else 0.0


def _mine_seconds() -> float:
    """CPU seconds of this process and every descendant, reaped ones included."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            ct = child.cpu_times()
            total += ct.user + ct.system
    return total


class CpuNoise:
    """How many CPUs' worth of work processes *not* started by the benchmark did meanwhile
    (another test suite on a shared box), and the VM's steal time."""

    def __enter__(self) -> Self:
        self.t0 = time.monotonic()
        self.busy0, self.mine0, self.steal0 = _busy_seconds(), _mine_seconds(), _steal_seconds()
        self.other_cpus = 0.0
        self.steal_cpus = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(1e-6, time.monotonic() - self.t0)
        busy = _busy_seconds() - self.busy0
        mine = _mine_seconds() - self.mine0
        self.other_cpus = round(max(0.0, busy - mine) / wall, 2)
        self.steal_cpus = round((_steal_seconds() - self.steal0) / wall, 2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (0 when it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0
