"""relay.sinks.client against real local TCP servers that answer with scripted bytes: reuse,
answers of every framing, early closes, timeouts, garbage, and what it refuses to send."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.sinks import client as client_module
from relay.sinks.client import ClientError, InvalidRequest, SinkClient

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Server:
    """Reads each request (head + Content-Length body) and writes the next scripted answer;
    counts connections and keeps the requests received."""

    answers: list[bytes | None] = field(default_factory=list)  # None: close without answering
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    close_after_answer: bool = False
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0) if self.answers else OK
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=t"


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    listener = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield state


@pytest_asyncio.fixture
async def client() -> AsyncIterator[SinkClient]:
    async with SinkClient() as sinks_client:
        yield sinks_client


async def test_a_connection_is_kept_and_reused(server: Server, client: SinkClient) -> None:
    for _ in range(3):
        response = await client.post(server.url, b'{"a":1}', {"X-Test": "1"}, 5.0)
        assert (response.status, response.body) == (200, b"ok")
    assert server.connections == 1 and len(server.requests) == 3


async def test_the_request_bytes(server: Server, client: SinkClient) -> None:
    body = b'{"a":1}'
    headers = {"Content-Type": "application/json", "Content-Length": "999", "Host": "evil"}
    await client.post(server.url, body, headers, 5.0)
    head, _, sent = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?token=t HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: 7" in lines and b"Content-Length: 999" not in lines
    assert b"Host: evil" not in lines and b"User-Agent: payrelay" in lines
    assert b"Content-Type: application/json" in lines and sent == body


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"abcde",
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", b"x"),
    ],
)
async def test_framings_that_keep_the_connection(
    server: Server, client: SinkClient, answer: bytes, body: bytes
) -> None:
    server.answers = [answer]
    response = await client.post(server.url, b"{}", {}, 5.0)
    assert response.body == body and response.status in (200, 201, 204)
    assert (await client.post(server.url, b"{}", {}, 5.0)).body == b"ok"
    assert server.connections == 1


async def test_an_answer_that_ends_at_close(server: Server, client: SinkClient) -> None:
    server.answers = [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"]
    server.close_after_answer = True
    response = await client.post(server.url, b"{}", {}, 5.0)
    assert (response.status, response.body) == (200, b"until the end")
    assert (await client.post(server.url, b"{}", {}, 5.0)).body == b"ok"
    assert server.connections == 2


async def test_headers_are_found_in_any_case_and_repeats_joined(
    server: Server, client: SinkClient
) -> None:
    server.answers = [
        b"HTTP/1.1 429 Too Many\r\nretry-after: 7\r\nVia: a\r\nVIA: b\r\nContent-Length: 0\r\n\r\n"
    ]
    response = await client.post(server.url, b"{}", {}, 5.0)
    assert response.status == 429 and response.headers.get("Retry-After") == "7"
    assert response.headers["via"] == "a, b" and "RETRY-AFTER" in response.headers


async def test_a_long_answer_is_cut_and_its_connection_dropped(
    server: Server, client: SinkClient
) -> None:
    # 600 of 100,000 bytes sent, then silence: the excerpt is enough, no waiting for the rest.
    server.answers = [b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n" + b"x" * 600]
    response = await client.post(server.url, b"{}", {}, 5.0, read_limit=512)
    assert response.status == 500 and response.body == b"x" * 512
    assert (await client.post(server.url, b"{}", {}, 5.0)).body == b"ok"
    assert server.connections == 2


async def test_a_kept_connection_the_server_closed_is_replaced(
    server: Server, client: SinkClient
) -> None:
    """The server drops the kept connection without answering the next request (its idle
    timeout racing our send): sent once more on a new connection."""
    await client.post(server.url, b"{}", {}, 5.0)
    server.answers = [None]  # the next request on that connection: closed, no answer
    response = await client.post(server.url, b"{}", {}, 5.0)
    assert response.body == b"ok" and server.connections == 2


async def test_a_new_connection_closed_without_an_answer_fails(
    server: Server, client: SinkClient
) -> None:
    server.answers = [None]
    with pytest.raises(ClientError, match="closed before an answer") as caught:
        await client.post(server.url, b"{}", {}, 5.0)
    assert str(caught.value).startswith(server.url)  # the sink redacts it
    assert len(server.requests) == 1  # not sent twice: the connection was new


async def test_an_idle_connection_past_its_age_is_not_reused(
    server: Server, client: SinkClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "IDLE_S", 0.0)
    await client.post(server.url, b"{}", {}, 5.0)
    await client.post(server.url, b"{}", {}, 5.0)
    assert server.connections == 2


async def test_garbage_is_not_an_answer(server: Server, client: SinkClient) -> None:
    server.answers = [b"SSH-2.0-OpenSSH_9.2\r\n"]
    with pytest.raises(ClientError, match="not an HTTP answer"):
        await client.post(server.url, b"{}", {}, 5.0)
    assert (await client.post(server.url, b"{}", {}, 5.0)).body == b"ok"  # a new connection


async def test_a_timeout_closes_the_connection(server: Server, client: SinkClient) -> None:
    server.answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"]  # never completes
    with pytest.raises(TimeoutError):
        await client.post(server.url, b"{}", {}, 0.2)
    assert (await client.post(server.url, b"{}", {}, 5.0)).body == b"ok"
    assert server.connections == 2


async def test_nobody_listening(client: SinkClient) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(ClientError, match="cannot connect"):
        await client.post(f"http://127.0.0.1:{port}/x", b"{}", {}, 5.0)


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("ftp://example.com/x", {}),
        ("http:///nohost", {}),
        ("http://127.0.0.1:1/x", {"X-Evil": "a\r\nInjected: yes"}),
        ("http://127.0.0.1:1/x", {"Bad Name": "v"}),
    ],
)
async def test_requests_that_cannot_be_sent(
    client: SinkClient, url: str, headers: dict[str, str]
) -> None:
    with pytest.raises(InvalidRequest):
        await client.post(url, b"{}", headers, 5.0)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for `localhost` (and 127.0.0.1), signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_checks_the_certificate_and_keeps_the_connection(tmp_path: Path) -> None:
    """TLS with SNI and certificate checks: a client that trusts the certificate posts twice
    on one connection; one with the default trust store refuses it."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    state = Server()
    listener = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=server_tls)
    port = listener.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/hook"
    async with listener:
        async with SinkClient(ssl.create_default_context(cafile=str(cert))) as trusting:
            for _ in range(2):
                assert (await trusting.post(url, b"{}", {}, 5.0)).body == b"ok"
        assert state.connections == 1
        assert state.requests[0].startswith(b"POST /hook HTTP/1.1\r\nHost: localhost:")
        async with SinkClient() as default:
            with pytest.raises(ClientError, match=r"cannot connect.*certificate"):
                await default.post(url, b"{}", {}, 5.0)
