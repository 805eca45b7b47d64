from promptflow import tool
from promptflow.connections import CustomConnection


@tool
def use_conn(q: str, conn: CustomConnection) -> str:
    print("the tool ran")
    return f"{q}: {type(conn).__name__}"
