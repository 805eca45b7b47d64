from promptflow.contracts.multimedia import Image
from promptflow.core import tool


@tool
def make(picture: Image) -> Image:
    return picture
