import asyncio
from typing import TypedDict

from promptflow.tracing import trace


class Result(TypedDict):
    doubled: list
    total: int


@trace
async def double(x: int) -> int:
    await asyncio.sleep(0.01 * (3 - x % 3))
    return 2 * x


@trace
def add(values: list) -> int:
    return sum(values)


async def run(values: list, offset: int = 0) -> Result:
    if not values:
        raise ValueError("values must not be empty")
    doubled = await asyncio.gather(*(double(v + offset) for v in values))
    return {"doubled": list(doubled), "total": add(list(doubled))}
