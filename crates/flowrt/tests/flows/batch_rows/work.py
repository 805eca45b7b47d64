import os
import time

from promptflow.core import tool


@tool
def work(n: int, sleep: float, mode: str) -> int:
    # Every call is counted, so tests can tell which lines ran.
    with open("calls.txt", "a") as f:
        f.write(f"{n}\n")
    if mode == "fail" and not os.path.exists("fixed"):
        raise ValueError(f"row {n} is bad (code ROW-{n})")
    if mode == "crash":
        os._exit(3)
    if sleep:
        time.sleep(sleep)
    return n * 10
