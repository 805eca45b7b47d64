from promptflow.tracing import trace


@trace
def letter(c: str) -> str:
    return c.upper()


def spell(word: str, sep: str = "."):
    for i, c in enumerate(word):
        if i:
            yield sep
        yield letter(c)
