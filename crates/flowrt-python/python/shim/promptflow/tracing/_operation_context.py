"""promptflow.tracing._operation_context compatibility: the operation context a line runs in.

A dict with attribute access, one per thread of execution (context-local), that flowrt fills
before each call with ``flow_id`` (``default_flow_id``, as promptflow's local runs have) and
``root_run_id`` (the line's run id).
"""
import contextvars

_CURRENT = contextvars.ContextVar("pf_operation_context", default=None)


class OperationContext(dict):
    """What promptflow knows of the operation a line belongs to."""

    @classmethod
    def get_instance(cls):
        ctx = _CURRENT.get()
        if ctx is None:
            ctx = cls()
            _CURRENT.set(ctx)
        return ctx

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None
