from promptflow.core import tool


@tool
def echo(text: str, times: int = 2) -> str:
    return " ".join([text] * times)
