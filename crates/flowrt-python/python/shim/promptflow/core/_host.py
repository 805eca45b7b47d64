"""Calls from Python into the flowrt host process (the worker's callback channel)."""

import sys


def host_call(op, args):
    hooks = sys.modules.get("_flowrt_hooks")
    if hooks is None:
        raise RuntimeError(f"'{op}' needs the flowrt host, but this code does not run in a flowrt worker")
    return hooks.host_call(op, args)


def connection_exists(name):
    """Ask the host whether a stored connection exists; raises with the host's message when not."""
    return host_call("connection", {"name": name})
