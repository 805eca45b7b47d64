from promptflow.contracts.multimedia import Image
from promptflow.core import tool


@tool
def pair(first: Image, second: Image) -> list:
    assert isinstance(first, Image) and isinstance(second, Image)
    return [first, second]
