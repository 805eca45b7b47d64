import os

from promptflow.core import tool


@tool
def link(links: dict) -> dict:
    # The session's folder holds its flow copy, the cwd.
    home = os.path.dirname(os.getcwd())
    done = {}
    for rel, target in links.items():
        path = os.path.join(home, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        os.symlink(target, path)
        done[rel] = os.path.islink(path)
    return done
