import os

from promptflow.connections import CustomConnection
from promptflow.core import tool


@tool
def read(conn: CustomConnection) -> dict:
    keys = ["PLAIN", "NUMBER", "FLAG", "ITEMS", "SECRET"]
    out = {k: os.environ.get(k) for k in keys}
    out["conn_region"] = conn.configs["region"]
    out["conn_token_matches"] = conn.secrets["token"] == os.environ.get("SECRET")
    return out
