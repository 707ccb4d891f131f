"""Loopback servers for the attachment fetcher tests: a file server the tests allow, and listeners on
forbidden addresses that only count the connections they accept (each one should stay at zero)."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
JUNK = bytes([0x00, 0xFE, 0x01]) + os.urandom(61)
MB = 1024 * 1024


@dataclass
class Listener:
    """A TCP listener that accepts, counts and closes: proof of whether anything connected."""

    host: str
    port: int = 0
    accepted: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class FileServer:
    """The allowed file server on 127.0.0.1; `hits` counts requests per path."""

    url: str
    port: int
    hits: dict[str, int] = field(default_factory=dict)


def _file_app(server: FileServer) -> web.Application:
    async def count(request: web.Request, handler: object) -> web.StreamResponse:
        server.hits[request.path] = server.hits.get(request.path, 0) + 1
        return await handler(request)  # type: ignore[operator,no-any-return]

    async def cat(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def doc(request: web.Request) -> web.Response:
        return web.Response(body=PDF, content_type="application/pdf")

    async def junk(request: web.Request) -> web.Response:
        return web.Response(body=JUNK, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def hop(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        if left == 0:
            return web.Response(body=PNG, content_type="image/png")
        raise web.HTTPFound(f"/hop/{left - 1}")

    async def relative(request: web.Request) -> web.Response:
        raise web.HTTPFound("../cat.png")

    async def declared_big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
        response.content_length = 5 * MB
        await response.prepare(request)
        await response.write(PDF)
        await asyncio.sleep(30)
        return response

    async def streamed_big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(PDF)
        for _ in range(32):
            await response.write(b" " * (64 * 1024))
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=PNG, content_type="image/png")

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(PNG), headers={"Content-Type": "image/png", "Content-Encoding": "gzip"}
        )

    app = web.Application(middlewares=[web.middleware(count)])
    app.add_routes(
        [
            web.get("/files/cat.png", cat),
            web.get("/cat.png", cat),
            web.get("/doc.pdf", doc),
            web.get("/junk.bin", junk),
            web.get("/redirect", redirect),
            web.get("/hop/{n}", hop),
            web.get("/files/sub/relative", relative),
            web.get("/declared-big", declared_big),
            web.get("/streamed-big", streamed_big),
            web.get("/slow", slow),
            web.get("/gzip", gzipped),
        ]
    )
    return app


@pytest_asyncio.fixture
async def file_server() -> AsyncIterator[FileServer]:
    """The allowed file server on a free 127.0.0.1 port."""
    holder = FileServer("", 0)
    runner = web.AppRunner(_file_app(holder), shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    holder.port = runner.addresses[0][1]
    holder.url = f"http://127.0.0.1:{holder.port}"
    yield holder
    await runner.cleanup()


@dataclass
class Forbidden:
    """Listeners on loopback addresses the fetcher is not allowed to reach."""

    v4: Listener
    v4_other: Listener
    v6: Listener

    @property
    def accepted(self) -> int:
        return self.v4.accepted + self.v4_other.accepted + self.v6.accepted


@pytest_asyncio.fixture
async def forbidden() -> AsyncIterator[Forbidden]:
    """Counting listeners on 127.0.0.1, 127.0.0.2 and [::1], each on a port no allow entry names."""
    v6 = Listener("::1")
    listeners = Forbidden(
        await Listener("127.0.0.1").start(),
        await Listener("127.0.0.2").start(),
        await v6.start() if ipv6_loopback_works() else v6,
    )
    yield listeners
    for listener in (listeners.v4, listeners.v4_other, listeners.v6):
        await listener.aclose()


@dataclass
class TraceCounts:
    """aiohttp's own hooks: requests the fetcher started, connections it opened."""

    requests: int = 0
    connections: int = 0

    def config(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def on_request(*_: object) -> None:
            self.requests += 1

        async def on_connection(*_: object) -> None:
            self.connections += 1

        trace.on_request_start.append(on_request)
        trace.on_connection_create_end.append(on_connection)
        return trace


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@dataclass
class TlsServer:
    """The file server over TLS on 127.0.0.1, with a certificate for the name `localhost` only."""

    port: int
    #: A client context that trusts the test CA (and still checks host names).
    client_context: ssl.SSLContext


def _tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a `localhost` leaf it signed: (CA cert, leaf cert, leaf key) as PEM files."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:  # fmt: skip
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("kimi-gateway test CA", None, ca_key, ca_key, ca=True)
    leaf_cert = build("localhost", ca_cert.subject, leaf_key, ca_key, ca=False)
    paths = (directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest_asyncio.fixture
async def tls_file_server(tmp_path: Path) -> AsyncIterator[TlsServer]:
    ca, leaf, key = _tls_material(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(leaf, key)
    runner = web.AppRunner(_file_app(FileServer("", 0)), shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    yield TlsServer(runner.addresses[0][1], ssl.create_default_context(cafile=str(ca)))
    await runner.cleanup()
