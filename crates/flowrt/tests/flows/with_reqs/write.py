import tomli_w  # installed from requirements.txt only: not in any base environment
from promptflow.core import tool


@tool
def write(x: int) -> str:
    return tomli_w.dumps({"x": x}).strip()
