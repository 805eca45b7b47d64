from promptflow.core import tool


@tool
def summary(repeated: str, shouted: str = "(quiet)") -> str:
    return f"{repeated} / {shouted}"
