from promptflow.core import tool


@tool
def analyze(name: str, excited: bool) -> dict:
    return {"letters": len(name), "mark": "!" if excited else ".", "is_long": len(name) > 8}
