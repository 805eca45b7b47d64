from promptflow import tool


@tool
def repeat(text: str, times: int, sep: str) -> str:
    return sep.join([text] * times)
