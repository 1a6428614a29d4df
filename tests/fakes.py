"""A fake ImageClient and item factories for runner tests: scripted answers, recorded calls."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from batchgen.errors import ErrorClass, RequestError
from batchgen.images import PNG, GeneratedImage
from batchgen.manifest.references import Reference
from batchgen.manifest.spec import ItemSpec
from batchgen.service.client import Generation, Room, no_wait

from .conftest import png_bytes

OK = "ok"  # a scripted success
LINKS = "links"  # a scripted success answered with links (https://cdn.test/<prompt>/<k>.png)


def make_spec(
    index: int = 0,
    id: str | None = None,
    prompt: str | None = None,
    *,
    n: int = 1,
    references: Sequence[Reference] = (),
    **extra: Any,
) -> ItemSpec:
    return ItemSpec(
        index=index,
        id=id or f"item-{index}",
        prompt=prompt or f"prompt {index}",
        model=extra.pop("model", "nano-banana-2"),
        size=extra.pop("size", "1K"),
        n=n,
        response_format="b64_json",
        extra_fields=MappingProxyType(extra),
        references=tuple(references),
    )


def error(error_class: ErrorClass, **kw: Any) -> RequestError:
    return RequestError(error_class, f"simulated {error_class.value}", **kw)


@dataclass
class FakeClient:
    """Answers each prompt from its script, in turn (the last answer repeats).

    A script entry is OK, a RequestError to raise, a Generation to answer as it is,
    or an asyncio.Event to wait for before taking the next entry.
    """

    scripts: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    images_per_call: int | None = None
    calls: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # prompts whose answers were read, in order
    link_scripts: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    _position: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def calls_for(self, prompt: str) -> int:
        return sum(1 for p, _, _ in self.calls if p == prompt)

    async def generate(
        self, body: Mapping[str, Any], idempotency_key: str, room: Room = no_wait
    ) -> Generation:
        prompt = str(body["prompt"])
        self.calls.append((prompt, dict(body), idempotency_key))
        script = self.scripts.get(prompt, [OK])
        while True:
            k = self._position[prompt]
            entry = script[min(k, len(script) - 1)]
            self._position[prompt] = k + 1
            if isinstance(entry, asyncio.Event):
                await entry.wait()
                continue
            break
        await room()  # as the real client does before it reads a body, an error page's too
        self.answered.append(prompt)
        if isinstance(entry, RequestError):
            raise entry
        if isinstance(entry, Generation):
            return entry
        count = self.images_per_call or int(body.get("n", 1))
        if entry == LINKS:
            links = tuple(f"https://cdn.test/{prompt}/{k}.png" for k in range(count))
            return Generation((), created=123, links=links)
        images = tuple(GeneratedImage(png_bytes(hue=k), PNG) for k in range(count))
        return Generation(images, created=123)

    async def download(self, url: str) -> GeneratedImage:
        """Links answer from ``link_scripts`` in turn (OK, a RequestError, or an asyncio.Event to
        wait for before taking the next entry; the last repeats)."""
        self.downloads.append(url)
        script = self.link_scripts.get(url, [OK])
        while True:
            k = self._position[url]
            self._position[url] = k + 1
            entry = script[min(k, len(script) - 1)]
            if not isinstance(entry, asyncio.Event):
                break
            await entry.wait()
        if isinstance(entry, RequestError):
            raise entry
        return GeneratedImage(png_bytes(hue=5), PNG)
