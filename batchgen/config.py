"""Settings: small, frozen, checked when built. The environment is read in ``resolve`` and ``storage``."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from batchgen import relay
from batchgen.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.qhaigc.net/v1"
DEFAULT_KEY_ENV = "BATCHGEN_API_KEY"
BASE_URL_ENV = "BATCHGEN_BASE_URL"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LimitRule:
    """What one limit takes: ``check_limit`` judges by it, and the manifest schema is made from it."""

    kind: type
    low: float
    high: float
    help: str  # what an editor shows beside the limit
    low_open: bool = False  # true: the value must be strictly above ``low``
    nullable: bool = False  # true: None (null) means "no limit"


LIMIT_RULES: dict[str, LimitRule] = {
    "concurrency": LimitRule(int, 1, 1024, "Requests at the service at once."),
    "requests_per_minute": LimitRule(
        float,
        0,
        1_000_000,
        "Holds the whole job, retries included, to this many requests in any 60 seconds;"
        " --rpm overrides it, and each of N shards takes 1/N of it. Without it, a limit the"
        " relay states is learned and mirrored, and any other 429 still slows the job down.",
        low_open=True,
        nullable=True,
    ),
    "max_attempts": LimitRule(int, 1, 20, "Attempts per item, retries included."),
    "timeout_s": LimitRule(float, 0, 3600, "Seconds per request.", low_open=True),
    "retry_base_s": LimitRule(float, 0, 600, "Backoff: the first wait before a retry, in seconds."),
    "retry_cap_s": LimitRule(float, 0, 3600, "Backoff: the longest wait before a retry, in seconds."),
    "max_retry_after_s": LimitRule(float, 0, 3600, "The longest Retry-After from the server honoured."),
    "max_reference_mb": LimitRule(
        float, 0, 1024, "The largest reference image file accepted at all, in MB.", low_open=True
    ),
    "max_consecutive_failures": LimitRule(
        int,
        1,
        100_000,
        "After this many retryable failures in a row the job pauses, sends one probe, and stops"
        " if the probe fails too.",
    ),
    "grace_s": LimitRule(
        float, 0, 3600, "After Ctrl-C or SIGTERM, how long requests in flight may finish, in seconds."
    ),
    "retry_after_send": LimitRule(
        bool, 0, 1, "false: never retry an attempt cut off after it was sent (it may have been billed)."
    ),
    "max_unconfirmed_per_item": LimitRule(
        int, 1, 20, "An item stops being retried after this many attempts that may have been billed."
    ),
    "reference_max_side": LimitRule(
        int, 64, 16384, "A local reference with a longer side (pixels) is downscaled before it is sent."
    ),
    "reference_max_mb": LimitRule(
        float,
        0,
        1024,
        "A local reference file larger than this (MB) is re-encoded smaller before it is sent.",
        low_open=True,
    ),
}


def check_limit(name: str, value: Any) -> tuple[Any, str | None]:
    """``value`` as limit ``name`` takes it, or an error message saying what is wanted."""
    spec = LIMIT_RULES[name]
    if value is None and spec.nullable:
        return None, None
    if spec.kind is bool:
        return (value, None) if isinstance(value, bool) else (None, f"must be true or false, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"must be a number, not {value!r}"
    if spec.kind is int and value != int(value):
        return None, f"must be a whole number, not {value!r}"
    too_low = value <= spec.low if spec.low_open else value < spec.low
    if too_low or value > spec.high:
        low = f"above {spec.low:g}" if spec.low_open else f"at least {spec.low:g}"
        return None, f"must be {low} and at most {spec.high:g}, not {value!r}"
    return spec.kind(value), None


@dataclass(frozen=True)
class Limits:
    """How hard and how long to push (manifest ``limits:``, CLI flags)."""

    concurrency: int = 8
    requests_per_minute: float | None = None
    max_attempts: int = 4
    timeout_s: float = 300.0
    retry_base_s: float = 2.0
    retry_cap_s: float = 60.0
    max_retry_after_s: float = 120.0
    max_reference_mb: float = 20.0
    max_consecutive_failures: int = 20  # then pause, probe, and stop if the probe fails
    grace_s: float = 10.0  # after Ctrl-C/SIGTERM, how long in-flight requests may finish
    retry_after_send: bool = True  # false: never retry a timeout/disconnect that may have been billed
    max_unconfirmed_per_item: int = 2  # an item stops being retried after this many perhaps-billed attempts
    reference_max_side: int = 2048  # a local reference with a longer side is downscaled before sending
    reference_max_mb: float = 4.0  # ... and one larger than this is re-encoded smaller

    def __post_init__(self) -> None:
        for f in fields(self):
            _, error = check_limit(f.name, getattr(self, f.name))
            if error:
                raise UsageError(f"limits.{f.name} {error}")

    @property
    def max_reference_bytes(self) -> int:
        return int(self.max_reference_mb * 1024 * 1024)

    @property
    def reference_send_bytes(self) -> int:
        return int(self.reference_max_mb * 1024 * 1024)


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address: traffic that never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# What check_base_url accepts, as a JSON Schema pattern for editors: an http(s) URL with a host and
# no credentials. check_base_url stays the judge; the two agree but on oddities (an IPv6 host with
# a zone, leading spaces, an empty user name).
BASE_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://([^/?#@:\[\]]+|\[[0-9A-Fa-f:.]+\])(:[^/?#@]*)?([/?#].*)?$"


def check_base_url(url: Any) -> str | None:
    """An error message for a base URL that cannot work, else None."""
    if not isinstance(url, str):
        return f"must be a URL string, not {url!r}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL like {DEFAULT_BASE_URL}, not {url!r}"
    if parts.username or parts.password:
        return "must not carry credentials; the key comes from the environment"
    return None


@dataclass(frozen=True)
class ApiSettings:
    """Where to send requests (manifest ``api:``); never the key itself."""

    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = DEFAULT_KEY_ENV
    reference_field: str = relay.REFERENCE_KEY  # where the relay reads reference images
    max_request_mb: float = 32.0  # a larger request body is never sent: the proxy in front would refuse it

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)


class Secret:
    """A value that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


DEFAULT_OUTPUT = Path("output")


@dataclass(frozen=True)
class Proxies:
    """A company's egress proxy, as curl, pip and the OpenAI SDK read it from the environment:
    ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY``, in either case (docs/real-service.md)."""

    http: str | None = None
    https: str | None = None
    no_proxy: str = ""

    def for_url(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through, or None (straight there)."""
        parts = urlsplit(url)
        proxy = {"http": self.http, "https": self.https}.get(parts.scheme)
        if proxy is None or not parts.hostname:
            return None
        if any(_bypasses(entry, parts.hostname.lower(), parts.port) for entry in self.no_proxy.split(",")):
            return None
        return proxy

    def __repr__(self) -> str:  # a proxy URL may carry a password
        http, https = _no_password(self.http), _no_password(self.https)
        return f"Proxies(http={http!r}, https={https!r}, no_proxy={self.no_proxy!r})"


def _bypasses(entry: str, host: str, port: int | None) -> bool:
    """A NO_PROXY entry, as curl reads them: ``*``, a name and its subdomains (``example.com``,
    ``.example.com``, ``*.example.com``), an address or a network (``10.0.0.0/8``), a ``:port``."""
    entry = entry.strip().lower()
    if entry == "*":
        return True
    name, _, wanted_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if wanted_port and (not wanted_port.isdecimal() or int(wanted_port) != port):
        return False
    name = name.strip("[]").removeprefix("*").lstrip(".")
    if not name:
        return False
    if host == name or host.endswith("." + name):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(name, strict=False)
    except ValueError:
        return False


def _no_password(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    return url if parts.password is None else url.replace(f":{parts.password}@", ":********@", 1)


def _proxies(environ: Mapping[str, str]) -> Proxies:
    def read(name: str) -> str | None:
        return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip() or None

    found: dict[str, str | None] = {}
    for scheme in ("http", "https"):
        name = f"{scheme}_proxy"
        url = read(name)
        if url is not None and "://" not in url:
            url = f"http://{url}"  # as curl takes "proxy:3128"
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise UsageError(f"{name.upper()} must be an http:// proxy URL, not {_no_password(url)}")
        found[scheme] = url
    return Proxies(found["http"], found["https"], read("no_proxy") or "")


@dataclass(frozen=True)
class Overrides:
    """What the command line says; None means "not given"."""

    base_url: str | None = None
    output_dir: Path | None = None
    limits: Mapping[str, Any] = field(default_factory=dict)
    simulate: bool = False


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs, resolved: command line > environment > manifest > defaults."""

    base_url: str
    api_key: Secret | None
    limits: Limits
    output_dir: Path
    reference_field: str
    max_request_bytes: int
    proxies: Proxies = field(default_factory=Proxies)


def resolve(
    api: ApiSettings,
    limits: Limits,
    overrides: Overrides,
    environ: Mapping[str, str],
    *,
    need_key: bool = True,
) -> RunSettings:
    """The one place batchgen reads environment variables. ``need_key``: false for a command that
    sends nothing (``validate``), which still hears what the run would say of the base URL."""
    base_url = overrides.base_url or environ.get(BASE_URL_ENV) or api.base_url
    source = (
        "--base-url"
        if overrides.base_url
        else (BASE_URL_ENV if environ.get(BASE_URL_ENV) else "api.base_url")
    )
    error = check_base_url(base_url)
    if error:
        raise UsageError(f"{source} {error}")
    parts = urlsplit(base_url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or "") and not overrides.simulate:
        log.warning(
            "%s is plain http to %s: the API key, prompts and images travel unencrypted; use https",
            source,
            parts.hostname,
        )
    key: Secret | None = None
    if not overrides.simulate and need_key:
        value = environ.get(api.api_key_env, "").strip()
        if not value:
            raise UsageError(
                f"no API key: set it with `export {api.api_key_env}=...`"
                " (the manifest's api.api_key_env names the variable), or try --simulate"
            )
        key = Secret(value)
    return RunSettings(
        base_url=base_url.rstrip("/"),
        api_key=key,
        limits=replace(limits, **overrides.limits),
        output_dir=overrides.output_dir or DEFAULT_OUTPUT,
        reference_field=api.reference_field,
        max_request_bytes=api.max_request_bytes,
        # The simulator runs on this machine: a proxy would only be in its way.
        proxies=Proxies() if overrides.simulate else _proxies(environ),
    )


# Where a run writing to a bucket keeps its spool (docs/storage.md): under the user's cache folder.
WORK_DIR_ENV = "BATCHGEN_WORK_DIR"
LOCK_LEASE_S = 60.0  # how long a bucket's lock outlives a run that stopped renewing it


@dataclass(frozen=True)
class StorageSettings:
    """What batchgen itself must know of the storage environment; obstore reads the credentials."""

    work_dir: Path
    endpoint: str | None = None  # AWS_ENDPOINT_URL(_S3): decides whether plain http is allowed
    allow_http: bool = False  # AWS_ALLOW_HTTP
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None

    def proxy_for(self, url: str) -> str | None:
        return self.http_proxy if url.startswith("http://") else self.https_proxy


def storage(environ: Mapping[str, str], work_dir: Path | None = None) -> StorageSettings:
    """The storage side of the environment (the other function that reads it, beside ``resolve``)."""

    def first(*names: str) -> str | None:
        return next((environ[n].strip() for n in names if environ.get(n, "").strip()), None)

    cache = first("XDG_CACHE_HOME") or str(Path(first("HOME") or "~").expanduser() / ".cache")
    return StorageSettings(
        work_dir=work_dir or Path(first(WORK_DIR_ENV) or Path(cache) / "batchgen" / "spool"),
        endpoint=first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
        allow_http=(first("AWS_ALLOW_HTTP") or "").lower() in ("1", "true", "yes"),
        http_proxy=first("HTTP_PROXY", "http_proxy"),
        https_proxy=first("HTTPS_PROXY", "https_proxy"),
        no_proxy=first("NO_PROXY", "no_proxy"),
    )
