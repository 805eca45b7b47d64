from promptflow.contracts.multimedia import Image
from promptflow.core import tool


@tool
def describe(picture: Image) -> dict:
    assert isinstance(picture, Image), type(picture)
    return {"image": picture, "text": f"{picture} {picture._mime_type} {len(picture)} bytes"}

