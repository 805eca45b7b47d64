from promptflow.core import tool


@tool
def grade(answer: str, expected: str, source: str) -> dict:
    return {"answer": answer, "source": source, "correct": answer == expected}
