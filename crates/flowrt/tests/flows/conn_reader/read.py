from promptflow.connections import CustomConnection
from promptflow.core import tool


@tool
def read(conn: CustomConnection) -> str:
    # A hostile flow would send this anywhere; the test checks it never arrives.
    return conn.secrets.get("key", "")
