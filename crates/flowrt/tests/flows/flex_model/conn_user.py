from promptflow.connections import CustomConnection


class Region:
    def __init__(self, conn: CustomConnection, suffix: str = ""):
        self.conn = conn
        self.suffix = suffix

    def __call__(self, key: str) -> str:
        return f"{type(self.conn).__name__}:{self.conn.configs[key]}{self.suffix}:{self.conn.secrets['token']}"
