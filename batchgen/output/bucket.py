"""A job folder in object storage (``s3://``, ``gs://``, ``az://``), through obstore.

This module is the one boundary with the storage library: every obstore error becomes a
``StoreError`` here, with a message that names the object and what went wrong (a status,
the service's error code), never the library's own text, which may quote request details.
Credentials are never passed in: obstore reads each cloud's standard environment itself.
docs/storage.md describes the layout and the variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from batchgen.config import StorageSettings, is_loopback_host
from batchgen.errors import StoreError, UsageError

if TYPE_CHECKING:
    from obstore.store import ObjectStore

SCHEMES = ("s3", "gs", "az")
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")


def is_url(text: str) -> bool:
    """Whether ``--output`` names a bucket rather than a folder."""
    return any(text.startswith(f"{scheme}://") for scheme in SCHEMES)


@dataclass(frozen=True)
class Location:
    """``scheme://bucket/prefix``: a folder in a bucket (an Azure container)."""

    scheme: str
    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Location:
        parts = urlsplit(text)
        if parts.scheme not in SCHEMES or not parts.netloc or parts.query or parts.fragment:
            raise UsageError(
                f"--output {text!r}: expected s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            )
        if "@" in parts.netloc:
            raise UsageError(f"--output {text!r}: credentials come from the environment, not the URL")
        prefix = "/".join(p for p in parts.path.split("/") if p)
        if any(p in (".", "..") for p in prefix.split("/")):
            raise UsageError(f"--output {text!r}: no . or .. in the prefix")
        return cls(parts.scheme, parts.netloc, prefix)

    def child(self, *names: str) -> Location:
        return Location(self.scheme, self.bucket, "/".join(p for p in (self.prefix, *names) if p))

    def __str__(self) -> str:
        return (
            f"{self.scheme}://{self.bucket}/{self.prefix}"
            if self.prefix
            else f"{self.scheme}://{self.bucket}"
        )


@dataclass(frozen=True)
class Retries:
    """How hard obstore tries one request before it reports a failure (it backs off between tries)."""

    attempts: int = 5
    first_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    give_up_s: float = 60.0


class Bucket:
    """One folder of a bucket: paths are relative to it, with ``/`` between parts."""

    def __init__(self, location: Location, settings: StorageSettings, retries: Retries = Retries()) -> None:
        self.location = location
        self._store = _open(location, settings, retries)

    def __str__(self) -> str:
        return str(self.location)

    async def put(self, path: str, data: bytes | Path) -> None:
        import obstore

        try:
            await obstore.put_async(self._store, path, data)
        except Exception as exc:
            raise self.error("write", path, exc) from None

    async def put_if(self, path: str, data: bytes, e_tag: str | None) -> str | None:
        """Write ``path`` only if it is absent (``e_tag`` None) or still that version; its new
        e_tag, or None when another writer came first."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode: Any = "create" if e_tag is None else {"e_tag": e_tag}
        try:
            result = await obstore.put_async(self._store, path, data, mode=mode)
        except (AlreadyExistsError, PreconditionError):
            return None
        except Exception as exc:
            raise self.error("write", path, exc) from None
        return result.get("e_tag") or ""

    async def get(self, path: str) -> tuple[bytes, str] | None:
        """The object's bytes and e_tag; None if there is none."""
        import obstore

        try:
            got = await obstore.get_async(self._store, path)
            data = bytes(await got.bytes_async())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self.error("read", path, exc) from None
        return data, str(got.meta.get("e_tag") or "")

    async def sizes(self, under: str = "") -> dict[str, int]:
        """Every object under this folder (or ``under`` in it), by path, with its size: one listing."""
        import obstore

        found: dict[str, int] = {}
        try:
            async for batch in obstore.list(self._store, under or None, chunk_size=1000):
                for meta in batch:
                    found[meta["path"]] = meta["size"]
        except Exception as exc:
            raise self.error("list", under or ".", exc) from None
        return found

    async def copy(self, source: str, target: str) -> None:
        """Inside the store, without the bytes passing through this machine."""
        import obstore

        try:
            await obstore.copy_async(self._store, source, target)
        except Exception as exc:
            raise self.error("copy", source, exc) from None

    async def delete(self, path: str) -> None:
        import obstore

        try:
            await obstore.delete_async(self._store, path)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self.error("delete", path, exc) from None

    def error(self, doing: str, path: str, exc: Exception) -> StoreError:
        """``exc`` from obstore as a StoreError, told in batchgen's words."""
        return StoreError(f"{self.location}/{path}: cannot {doing}: {describe(exc)}")


def describe(exc: Exception) -> str:
    """What went wrong, from the class of the error, its status and the service's error code."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    text = str(exc)
    status = _STATUS.search(text)
    code = _CODE.search(text)
    said = " ".join(x for x in (status.group(1) if status else "", code.group(1) if code else "") if x)
    if code and code.group(1) == "NoSuchBucket":
        return "the bucket does not exist (or these credentials cannot see it)"
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or (
        status and status.group(1) in ("401", "403")
    ):
        return f"access refused ({said or 'no reason given'}): check the credentials in the environment"
    if isinstance(exc, FileNotFoundError):
        return f"not found ({said or 'no reason given'})"
    if said:
        return f"the store answered {said}"
    return "the store cannot be reached (connection refused, timed out, or a name that does not resolve)"


def _open(location: Location, settings: StorageSettings, retries: Retries) -> ObjectStore:
    from obstore.store import from_url

    root = f"{location.scheme}://{location.bucket}/{location.prefix}"
    client: dict[str, Any] = {"timeout": "60s", "connect_timeout": "5s"}
    # Passing client options at all means AWS_ALLOW_HTTP from the environment no longer counts:
    # plain http is allowed here when the endpoint is on this machine or the environment allows it.
    if settings.allow_http or _plain_loopback(settings.endpoint):
        client["allow_http"] = True
    elif settings.endpoint and settings.endpoint.startswith("http://"):
        raise UsageError(
            "the storage endpoint is plain http to a remote host: use https, or set AWS_ALLOW_HTTP=true"
        )
    proxy = settings.proxy_for(settings.endpoint or "https://")
    if proxy:
        client["proxy_url"] = proxy
        if settings.no_proxy:
            client["proxy_excludes"] = settings.no_proxy
    retry: Mapping[str, Any] = {
        "max_retries": retries.attempts - 1,
        "retry_timeout": timedelta(seconds=retries.give_up_s),
        "backoff": {
            "init_backoff": timedelta(seconds=retries.first_backoff_s),
            "max_backoff": timedelta(seconds=retries.max_backoff_s),
            "base": 2,
        },
    }
    # S3 signs a hash of each body unless told not to: a second pass over every image, on the
    # run's cores, that TLS already covers (the request itself stays signed).
    extra: dict[str, Any] = {"unsigned_payload": True} if location.scheme == "s3" else {}
    try:
        store: ObjectStore = from_url(root, client_options=client, retry_config=retry, **extra)  # type: ignore[call-overload]
        return store
    except Exception as exc:
        raise UsageError(f"--output {location}: {describe(exc)}") from None


def _plain_loopback(endpoint: str | None) -> bool:
    if not endpoint:
        return False
    parts = urlsplit(endpoint)
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "")
