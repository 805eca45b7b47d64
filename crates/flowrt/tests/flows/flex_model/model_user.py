from pathlib import Path

from promptflow.core import OpenAIModelConfiguration, Prompty


class Asker:
    def __init__(self, config: OpenAIModelConfiguration):
        self.config = config

    def __call__(self, question: str, use_prompty: bool = False) -> str:
        if use_prompty:
            prompty = Prompty.load(Path(__file__).parent / "ask.prompty", model={"configuration": self.config})
            return prompty(question=question)
        c = self.config
        return f"{type(c).__name__}:{c.connection}:{c.model}:{c.base_url}:{c.api_key}:{question}"
