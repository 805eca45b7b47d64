"""promptflow.tracing compatibility: `trace` is a no-op decorator."""

__all__ = ["trace", "start_trace"]


def trace(func=None, **kwargs):
    if func is not None and callable(func):
        return func

    def decorate(f):
        return f

    return decorate


def start_trace(*args, **kwargs):
    return None
