from promptflow.core import log_metric, tool


@tool
def collect(counts: list) -> dict:
    log_metric("total_words", sum(counts))
    return {"lines": len(counts)}
