from dataclasses import dataclass


@dataclass
class Label:
    text: str
    length: int


class Labeler:
    def __init__(self, prefix: str, times: int = 3):
        self.prefix = prefix
        self.times = times
        self.calls = 0

    def __call__(self, word: str) -> Label:
        if word == "boom":
            raise RuntimeError("boom word")
        self.calls += 1
        text = "-".join([f"{self.prefix}:{word}"] * self.times)
        return Label(text=text, length=len(text))

    def __aggregate__(self, labels: list) -> dict:
        assert all(isinstance(label, Label) for label in labels), labels
        return {
            "count": len(labels),
            "longest": max(label.length for label in labels),
            "texts": [label.text for label in labels],
        }
