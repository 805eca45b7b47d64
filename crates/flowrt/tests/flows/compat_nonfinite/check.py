import math

from promptflow import tool


@tool
def check(values: dict):
    return {k: f"{type(v).__name__}:{v}" for k, v in values.items()} | {"is_nan": math.isnan(values["nan"])}
