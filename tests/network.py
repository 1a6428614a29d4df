"""A company's network in miniature, on 127.0.0.1: a forward proxy and a TLS front with a private
CA. Each runs on its own loop in a thread (the code under test runs its own asyncio.run()), and
the fixture that starts one stops it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

_HOP_BY_HOP = ("proxy-", "connection:", "keep-alive:")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class ThreadedServer:
    """An asyncio server on its own loop in a thread; ``port`` once started."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.handle(reader, writer)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class ForwardProxy(ThreadedServer):
    """An egress proxy: absolute-URI requests (plain http) and CONNECT (https). ``seen`` holds
    each request line it was asked, e.g. ``POST http://127.0.0.1:8787/v1/images/generations``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.credentials: list[str] = []  # each request's Proxy-Authorization, if it had one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request, *fields = head.rstrip("\r\n").split("\r\n")
        method, target, version = request.split(" ", 2)
        self.seen.append(f"{method} {target}")
        self.credentials += [
            f.split(":", 1)[1].strip() for f in fields if f.lower().startswith("proxy-authorization:")
        ]
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            kept = [f for f in fields if f and not f.lower().startswith(_HOP_BY_HOP)]
            path = url.path + (f"?{url.query}" if url.query else "")
            # One request per connection: the answer ends when the server closes.
            up_writer.write(
                f"{method} {path} {version}\r\n{''.join(f + chr(13) + chr(10) for f in kept)}"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


class TlsFront(ThreadedServer):
    """TLS on 127.0.0.1 in front of a plain-http server, with a certificate from a private CA."""

    def __init__(self, ssl_context: ssl.SSLContext, backend_port: int) -> None:
        super().__init__(ssl_context)
        self._backend = backend_port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._backend)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def private_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA of our own (its certificate file) and a server context with a certificate it signed
    for 127.0.0.1, made with the openssl command."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = ["openssl", "req", *ec, "-keyout", str(ca_key), "-x509", "-out", str(ca), "-days", "2"]
    subprocess.run(
        [
            *run,
            "-subj",
            "/CN=batchgen test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )
    extensions = folder / "srv.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "2",
            "-extfile",
            str(extensions),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return ca, context
