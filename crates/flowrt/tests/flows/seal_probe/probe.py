import os
import tempfile

from promptflow.core import Prompty, tool


def attempt(action):
    try:
        action()
        return "ok"
    except PermissionError:
        return "PermissionError"
    except FileNotFoundError:
        # Not there to be denied: the test names only paths that exist.
        return "FileNotFoundError"
    except OSError as e:
        return f"OSError {e.errno}"


def host_read(path):
    """Ask the session's agent (the host of the worker's callbacks) to read a file for us."""
    try:
        text = Prompty(path)._template
        return "ok: " + text[:20]
    except Exception as e:
        return "PermissionError" if "Permission denied" in str(e) else f"{type(e).__name__}: {e}"[:300]


def write(path):
    with open(path, "w") as f:
        f.write("pwned")


@tool
def probe(targets: dict) -> dict:
    attempts = {}
    for path in targets.get("read", []):
        attempts[f"read {path}"] = attempt(lambda p=path: open(p, "rb").read(1))
    for path in targets.get("write", []):
        attempts[f"write {path}"] = attempt(lambda p=path: write(p))
    for path in targets.get("host_read", []):
        attempts[f"host read {path}"] = host_read(path)
    for path in targets.get("list", []):
        attempts[f"list {path}"] = attempt(lambda p=path: os.listdir(p))
    # What a session may do: its folder (the cwd is its flow copy), its temp dir.
    try:
        write("scratch.txt")
        with tempfile.NamedTemporaryFile("w") as f:
            f.write("x")
        own = "ok"
    except OSError as e:
        own = f"failed: {e}"
    # The processes this session can see at all.
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return {"attempts": attempts, "own": own, "pids": pids, "uid": os.getuid(), "gid": os.getgid()}
