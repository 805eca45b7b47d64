from promptflow import tool


@tool
def floats():
    return {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "one": 1.5}
