from promptflow.core import tool


@tool
def stats(text: str) -> dict:
    words = text.split()
    print(f"counting {len(words)} words")
    return {"count": len(words), "words": words}
