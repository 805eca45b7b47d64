import os

from promptflow.core import tool


@tool
def invert(n: int) -> float:
    if n == 0:
        raise ValueError("cannot invert zero (code INV-0)")
    if n < 0:
        os._exit(9)
    return 1 / n
