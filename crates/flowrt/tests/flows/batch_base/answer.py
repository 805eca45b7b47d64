from promptflow.core import tool


@tool
def answer(q: str):
    # "none" answers None: an evaluation maps it to a string input as "None".
    return None if q == "none" else q.upper()
