from promptflow.core import tool
from promptflow.tracing import trace


@trace
def square(n):
    return n * n


@trace
def plus_one(n):
    return square(n) + 1


@tool
def calc(x: int) -> int:
    return plus_one(x)
