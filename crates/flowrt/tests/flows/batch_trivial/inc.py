from promptflow.core import tool


@tool
def inc(x: int) -> int:
    return x + 1
