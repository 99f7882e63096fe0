"""Public ids are UUID strings; anything that is not one names nothing.

Plain Python, like the rest of the domain: a UUID is parsed, or made from the
OS's random bytes and the time.

New ids are UUID version 7 (RFC 9562): the millisecond they were made, then 74
random bits. The random bits keep them unguessable; the time puts each new row
of a table on the last pages of its id's index, where a random id (version 4)
touched a random leaf page of every such index in every batch (docs/performance.md).
"""

from __future__ import annotations

import functools
import os
import time
import uuid


def parse_id(value: str) -> uuid.UUID | None:
    """The UUID in `value`, or None when `value` cannot be an id we issued."""
    if len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def canonical_id(value: str) -> str | None:
    """`value` as the database spells that UUID (lower case, hyphenated), or None."""
    parsed = parse_id(value)
    return None if parsed is None else str(parsed)


def new_id() -> uuid.UUID:
    return uuid.UUID(new_ids(1)[0])


def new_ids(count: int) -> list[str]:
    """`count` new (version 7) UUIDs in canonical form, from one read of the OS's CSPRNG.

    A batch of bookings needs dozens at once: one `os.urandom` call instead of
    one each was a fifth of the committer's time, and formatting the hex of the
    whole batch at once takes a third of the time of `str(uuid.UUID(...))` per id.
    """
    pool = bytearray(os.urandom(16 * count))
    # RFC 9562: the Unix time in milliseconds in bytes 0-5, big-endian; the version (7)
    # in the high nibble of byte 6, the variant (0b10) in byte 8; the rest random.
    stamp = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    for position, byte in enumerate(stamp):
        pool[position::16] = bytes((byte,)) * count
    pool[6::16] = bytes(byte & 0x0F | 0x70 for byte in pool[6::16])
    pool[8::16] = bytes(byte & 0x3F | 0x80 for byte in pool[8::16])
    h = pool.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-"
        f"{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


# In a sale the same few event and section ids arrive thousands of times a second:
# each is parsed once. Bounded, so arbitrary client strings cannot grow it.
cached_canonical_id = functools.lru_cache(maxsize=4096)(canonical_id)


class IdPool:
    """New ids drawn from bulk reads of the CSPRNG, `batch` at a time."""

    def __init__(self, batch: int = 64) -> None:
        self._batch = batch
        self._ids: list[str] = []

    def __call__(self) -> str:
        if not self._ids:
            self._ids = new_ids(self._batch)
        return self._ids.pop()
