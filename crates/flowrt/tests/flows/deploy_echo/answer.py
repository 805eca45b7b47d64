from promptflow import tool

VERSION = "v1"


@tool
def answer(text: str) -> dict:
    return {"version": VERSION, "echo": text}
