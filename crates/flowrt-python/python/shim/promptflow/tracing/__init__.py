"""promptflow.tracing compatibility: ``@trace`` records a span for each call of the function it
decorates (name, start, end, inputs, output or error, and its parent among them), which flowrt
returns with the node's run and exports beside it; ``start_trace`` is accepted and does nothing
(flowrt exports when OTEL_EXPORTER_OTLP_ENDPOINT is set)."""

import contextvars
import functools
import inspect
import time

__all__ = ["trace", "start_trace"]

_FLOWRT_SHIM = True
# Set by flowrt's worker: the context variable holding the current call's capture, whose
# ``spans`` list the spans go to. Outside a flowrt call, @trace only calls the function.
_flowrt_capture = None
_PARENT = contextvars.ContextVar("flowrt_trace_parent", default=None)
_MAX_VALUE = 10_000


def _value(v):
    """A JSON-friendly, bounded rendering of an input or output."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v if not isinstance(v, str) or len(v) <= _MAX_VALUE else v[:_MAX_VALUE] + "..."
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in list(v)[:100]]
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in list(v.items())[:100]}
    text = repr(v)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE] + "..."


def _spans():
    capture = _flowrt_capture.get() if _flowrt_capture is not None else None
    return getattr(capture, "spans", None)


def _begin(f, args, kwargs, spans):
    try:
        bound = inspect.signature(f).bind_partial(*args, **kwargs)
        inputs = {k: _value(v) for k, v in bound.arguments.items() if k not in ("self", "cls")}
    except (TypeError, ValueError):
        inputs = {"args": _value(list(args)), "kwargs": _value(kwargs)}
    span = {"id": len(spans) + 1, "parent": _PARENT.get(), "name": f.__qualname__,
            "start": time.time(), "inputs": inputs}
    spans.append(span)
    return span, _PARENT.set(span["id"])


def _end(span, token, output=None, error=None):
    span["end"] = time.time()
    if error is not None:
        span["error"] = f"{type(error).__name__}: {error}"
    else:
        span["output"] = _value(output)
    _PARENT.reset(token)


def trace(func=None, **kwargs):
    def decorate(f):
        if inspect.iscoroutinefunction(f):

            @functools.wraps(f)
            async def traced_async(*args, **kw):
                spans = _spans()
                if spans is None:
                    return await f(*args, **kw)
                span, token = _begin(f, args, kw, spans)
                try:
                    out = await f(*args, **kw)
                except BaseException as e:
                    _end(span, token, error=e)
                    raise
                _end(span, token, output=out)
                return out

            return traced_async

        @functools.wraps(f)
        def traced(*args, **kw):
            spans = _spans()
            if spans is None:
                return f(*args, **kw)
            span, token = _begin(f, args, kw, spans)
            try:
                out = f(*args, **kw)
            except BaseException as e:
                _end(span, token, error=e)
                raise
            _end(span, token, output=out)
            return out

        return traced

    if func is not None and callable(func):
        return decorate(func)
    return decorate


def start_trace(*args, **kwargs):
    return None
