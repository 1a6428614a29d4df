"""A company's network: the egress proxy named by HTTP_PROXY/HTTPS_PROXY/NO_PROXY, a private CA
through SSL_CERT_FILE, and a warning for a plain-http relay. Proxy and TLS front are real servers
on 127.0.0.1 (tests/network.py), started and stopped by each test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from batchgen.cli.main import main
from batchgen.config import ApiSettings, Limits, Overrides, Proxies, resolve
from batchgen.errors import ErrorClass, RequestError, UsageError
from batchgen.output import paths
from batchgen.service.client import DownloadPolicy, HttpImageClient
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS
from .network import ForwardProxy, TlsFront, private_ca

PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_NAMES, "BATCHGEN_BASE_URL", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as server:
        yield server  # type: ignore[misc]


def three_items(write_manifest: Callable[..., Path]) -> Path:
    items = [{"id": f"i{k}", "prompt": f"product {k}"} for k in range(3)]
    return write_manifest({"job": "net", "limits": {**FAST_LIMITS, "max_attempts": 1}, "items": items})


def run(manifest: Path, sim: Simulator, output: Path, *flags: str) -> int:
    return main(["run", str(manifest), "--base-url", sim.base_url, "--output", str(output), *flags])


@pytest.mark.parametrize(
    ("name", "no_proxy"),
    [
        ("HTTP_PROXY", None),
        ("http_proxy", None),
        ("HTTP_PROXY", "127.0.0.1"),  # the relay's address: straight there
        ("HTTP_PROXY", "*"),
    ],
)
def test_a_run_takes_the_proxy_unless_no_proxy_names_the_relay(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    no_proxy: str | None,
) -> None:
    sim = threaded_simulator(response="url")  # links too: fetched the same way as the requests
    monkeypatch.setenv(name, proxy.url)
    if no_proxy is not None:
        monkeypatch.setenv("no_proxy", no_proxy)
    assert run(three_items(write_manifest), sim, tmp_path, "-q") == 0
    assert sim.stats.requests == 3
    assert len(list((tmp_path / "net" / paths.IMAGES).glob("*.png"))) == 3
    if no_proxy is not None:
        assert proxy.seen == []
        return
    posts = [line for line in proxy.seen if line.startswith("POST ")]
    assert posts == [f"POST {sim.base_url}/images/generations"] * 3
    links = [line for line in proxy.seen if line.startswith("GET ")]
    assert len(links) == 3
    assert all(line.startswith(f"GET http://127.0.0.1:{sim.port}/files/") for line in links)


def test_credentials_in_the_proxy_url_are_sent_to_the_proxy_and_never_logged(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = threaded_simulator()
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://me:s3cret@"))
    assert run(three_items(write_manifest), sim, tmp_path, "-vv") == 0
    assert proxy.credentials == ["Basic bWU6czNjcmV0"] * 3  # me:s3cret
    assert sim.stats.requests == 3
    captured = capsys.readouterr()
    assert "s3cret" not in captured.out + captured.err


async def test_a_proxied_link_is_still_refused_a_private_address(proxy: ForwardProxy) -> None:
    """The proxy resolves the link's host, not us: the guard looks it up itself before asking."""
    proxies = Proxies(http=proxy.url, https=proxy.url)
    client = HttpImageClient(
        "https://relay.test/v1",
        None,
        timeout_s=5,
        download=DownloadPolicy(allow_loopback=False),
        proxies=proxies,
    )
    async with client:
        for url in ("http://10.1.2.3/x.png", "http://localhost/x.png", "http://vm/x.png"):
            with pytest.raises(RequestError) as caught:
                await client.download(url)
            assert caught.value.error_class is ErrorClass.DOWNLOAD_FAILED
            assert "refused" in caught.value.message or "address" in caught.value.message
    assert proxy.seen == []


@pytest.mark.parametrize(
    ("url", "no_proxy", "expected"),
    [
        ("https://api.example.com/v1", "", "https-proxy"),
        ("http://api.example.com/v1", "", "http-proxy"),
        ("https://api.example.com/v1", "example.com", None),
        ("https://api.example.com/v1", ".example.com", None),
        ("https://api.example.com/v1", "*.example.com", None),
        ("https://api.example.com/v1", "other.com, api.example.com", None),
        ("https://notexample.com/v1", "example.com", "https-proxy"),
        ("https://api.example.com:8443/v1", "api.example.com:8443", None),
        ("https://api.example.com/v1", "api.example.com:8443", "https-proxy"),
        ("http://10.2.3.4/x", "10.0.0.0/8", None),
        ("http://11.2.3.4/x", "10.0.0.0/8", "http-proxy"),
        ("http://127.0.0.1:8000/v1", "127.0.0.0/8", None),
        ("https://anything.test/", "*", None),
    ],
)
def test_which_requests_take_the_proxy(url: str, no_proxy: str, expected: str | None) -> None:
    proxies = Proxies(http="http-proxy", https="https-proxy", no_proxy=no_proxy)
    assert proxies.for_url(url) == expected


def test_the_environment_is_read_in_either_case_and_a_password_is_never_shown() -> None:
    environ = {
        "BATCHGEN_API_KEY": "k",
        "https_proxy": "http://me:s3cret@proxy.corp:3128",
        "HTTP_PROXY": "proxy.corp:3128",
        "NO_PROXY": "internal.corp",
    }
    proxies = resolve(ApiSettings(), Limits(), Overrides(), environ).proxies
    assert proxies == Proxies("http://proxy.corp:3128", "http://me:s3cret@proxy.corp:3128", "internal.corp")
    assert "s3cret" not in repr(proxies)
    with pytest.raises(UsageError, match="HTTPS_PROXY must be an http:// proxy URL") as caught:
        resolve(
            ApiSettings(),
            Limits(),
            Overrides(),
            {"BATCHGEN_API_KEY": "k", "HTTPS_PROXY": "socks5://u:pw@p:1080"},
        )
    assert "pw" not in str(caught.value)
    # --simulate talks to this machine: no proxy in the way.
    simulated = resolve(ApiSettings(), Limits(), Overrides(simulate=True), {"HTTP_PROXY": "http://p:1"})
    assert simulated.proxies == Proxies()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a CA")
def test_a_private_ca_through_ssl_cert_file(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    """In a process of its own: the TLS context is made as aiohttp is imported, from the
    environment the process started with (as it is for a user)."""
    sim = threaded_simulator()
    ca, context = private_ca(tmp_path)
    manifest = three_items(write_manifest)
    with TlsFront(context, sim.port) as front:
        base = f"https://127.0.0.1:{front.port}/v1"
        env = {k: v for k, v in os.environ.items() if k not in PROXY_NAMES}
        argv = [sys.executable, "-m", "batchgen", "run", str(manifest), "--base-url", base, "-q"]
        untrusted = subprocess.run(
            [*argv, "--output", str(tmp_path / "a")], env=env, capture_output=True, timeout=60
        )
        trusted = subprocess.run(
            [*argv, "--output", str(tmp_path / "b")],
            env={**env, "SSL_CERT_FILE": str(ca)},
            capture_output=True,
            timeout=60,
        )
    assert untrusted.returncode == 1, untrusted.stderr
    report = orjson.loads((tmp_path / "a" / "net" / paths.REPORT_JSON).read_bytes())
    assert "certificate of 127.0.0.1 could not be verified" in report["failures"][0]["message"]
    assert trusted.returncode == 0, trusted.stderr
    assert sim.stats.requests == 3  # the untrusted run sent nothing


def test_validate_warns_about_a_plain_http_relay(
    write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    items = [{"id": "a", "prompt": "p"}]
    remote = write_manifest({"job": "w", "api": {"base_url": "http://relay.example.com/v1"}, "items": items})
    local = write_manifest({"job": "w", "api": {"base_url": "http://127.0.0.1:9/v1"}, "items": items})
    os.environ.pop("BATCHGEN_API_KEY")  # validate needs no key
    assert main(["validate", str(remote)]) == 0
    assert "plain http to relay.example.com" in capsys.readouterr().err
    assert main(["validate", str(local)]) == 0
    assert "plain http" not in capsys.readouterr().err
