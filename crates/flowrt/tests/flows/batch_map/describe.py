from promptflow.core import tool


@tool
def describe(question, count, ratio, tag, mode) -> dict:
    values = {"question": question, "count": count, "ratio": ratio, "tag": tag, "mode": mode}
    return {k: [v, type(v).__name__] for k, v in values.items()}
