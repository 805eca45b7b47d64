import time

from promptflow import tool

VERSION = "v1"


@tool
def answer(text: str, delay: float = 0) -> dict:
    time.sleep(delay)
    return {"version": VERSION, "echo": text}
