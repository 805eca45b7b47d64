from promptflow.core import tool

@tool
def echo(items, obj, t: str):
    return f"{items!r}|{obj!r}|{t}"
