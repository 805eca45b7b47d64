import time
from promptflow import tool

@tool
def double(x: int) -> int:
    time.sleep(0.005)
    return x * 2
