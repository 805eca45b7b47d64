from promptflow.core import tool


# Annotations people write that are values, not types: promptflow passes the arguments as they are.
@tool
def search(query: str, filter: {} = None, mode: "fancy" = "x") -> str:
    return f"{query}|{filter}|{mode}"
