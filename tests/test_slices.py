"""Work in slices: every item in order, and the loop gets a turn after every slice."""
from __future__ import annotations

import asyncio

from dbackd.core.slices import sliced


async def test_the_loop_gets_a_turn_after_every_slice():
    turns = []
    ticking = True

    async def ticker() -> None:
        while ticking:
            turns.append(len(seen))
            await asyncio.sleep(0)

    seen: list[int] = []
    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    turns.clear()
    async for item in sliced(range(10), per_slice=4):
        seen.append(item)
    ticking = False
    await task
    assert seen == list(range(10))
    assert turns[:2] == [4, 8]  # the other task ran after the 4th and the 8th item, not between
