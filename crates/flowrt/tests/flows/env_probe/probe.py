import os
import resource

from promptflow.core import tool


@tool
def probe() -> dict:
    return {
        "env_keys": sorted(os.environ.keys()),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "cwd_is_session": "/sessions/" in os.getcwd() or os.environ.get("HOME", "").find("/sessions/") >= 0,
    }
