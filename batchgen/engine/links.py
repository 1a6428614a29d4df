"""Images the service answered with as links: fetched with their own small retry budget.

The image behind a link was generated and billed when the link arrived, so a
failed fetch is fetched again, never answered by asking for a new generation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from batchgen.engine.retry import RetryPolicy
from batchgen.errors import LinkError, RequestError
from batchgen.images import GeneratedImage
from batchgen.service.client import ImageClient

log = logging.getLogger(__name__)


async def fetch_all(
    client: ImageClient,
    item_id: str,
    links: Sequence[str],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
) -> tuple[GeneratedImage, ...]:
    """Every link's image, in order; LinkError (naming all the links) when one cannot be had."""
    images = []
    for link in links:
        try:
            async for attempt in policy.downloading(sleep=sleep):
                with attempt:
                    try:
                        image = await client.download(link)
                    except RequestError as exc:
                        log.info("%s: fetching its image failed (%s)", item_id, exc.message)
                        raise
        except RequestError as exc:
            raise LinkError(
                f"{exc.message}; the image was generated (and billed) but not fetched:"
                " its link is kept, and a re-run or `batchgen retry` fetches it again",
                links,
                exc.http_status,
            ) from exc
        images.append(image)
    return tuple(images)
