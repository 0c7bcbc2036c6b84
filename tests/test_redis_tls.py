"""`rediss://` URLs against a Redis with a self-signed certificate, as on Heroku."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from arq.connections import create_pool

from relay.embedded import free_port
from relay.redis import arq_settings, connect


def tls_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if not binary or not shutil.which("openssl"):
        pytest.skip("needs redis-server with TLS and openssl on PATH")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=heroku-redis-like",
            "-keyout",
            str(directory / "key.pem"),
            "-out",
            str(directory / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(directory / "cert.pem"),
            "--tls-key-file",
            str(directory / "key.pem"),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.skip(f"this redis-server has no TLS support: {process.stderr.read()[-200:]!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("TLS redis did not start")


async def test_rediss_with_self_signed_certificate(tmp_path: Path) -> None:
    """Both the ingress client and arq's pool connect over TLS to a self-signed server."""
    process, port = tls_redis(tmp_path)
    url = f"rediss://127.0.0.1:{port}/0"
    try:
        client = connect(url)
        assert await client.ping()
        await client.aclose()
        pool = await create_pool(arq_settings(url))
        assert await pool.ping()
        await pool.aclose()
    finally:
        process.kill()
        process.wait()
