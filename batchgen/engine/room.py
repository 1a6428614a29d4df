"""Room in memory for answers' images, owned by the engine from reading a body to writing it.

Requests go out at full concurrency, but an answer's body is read only once it has a
place: the others wait in the kernel, flow-controlled, not in our memory. The place is
given back once its images are written (or lost), at once when an attempt fails (so its
retry waits for no one), and in any case when the item ends, cancelled or not.
Each answer can be several megabytes; holding more than the disk takes gains nothing.
"""

from __future__ import annotations

import asyncio

IMAGES_AT_ONCE = 8


class ImageRoom:
    def __init__(self, at_once: int = IMAGES_AT_ONCE) -> None:
        self._free = asyncio.Semaphore(at_once)
        self.taken = 0  # places held now

    def place(self) -> Place:
        """A place for one item's answer, not yet taken."""
        return Place(self)


class Place:
    def __init__(self, room: ImageRoom) -> None:
        self._room = room
        self._held = False

    async def take(self) -> None:
        """Wait for room; a place already held is kept."""
        if not self._held:
            await self._room._free.acquire()
            self._held = True
            self._room.taken += 1

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._room.taken -= 1
            self._room._free.release()
