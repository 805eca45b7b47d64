from promptflow import tool


@tool
def double(x: int) -> int:
    return x * 2
