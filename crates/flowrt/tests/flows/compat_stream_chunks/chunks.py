from pathlib import Path

from promptflow.core._flow import Prompty


def count(question: str = "how are the chunks split"):
    prompty = Prompty.load(Path(__file__).parent / "ask.prompty", model={"parameters": {"stream": True, "max_tokens": 20}})
    chunks = list(prompty(question=question))
    return {"chunks": len(chunks), "text": "".join(chunks)}
