"""promptflow.core compatibility: tool, ToolProvider, log_metric, model configurations and Prompty."""

import sys

from promptflow.core._model_configuration import AzureOpenAIModelConfiguration, OpenAIModelConfiguration
from promptflow.core._prompty import AsyncPrompty, Prompty

__all__ = [
    "AsyncPrompty",
    "AzureOpenAIModelConfiguration",
    "OpenAIModelConfiguration",
    "Prompty",
    "ToolProvider",
    "log_metric",
    "tool",
]


def tool(func=None, *, name=None, description=None, type=None, input_settings=None, streaming_option_parameter=None, **kwargs):
    """Mark a function or method as a tool. Works bare (`@tool`) and with arguments (`@tool(name=...)`)."""

    def decorate(f):
        setattr(f, "__tool", None)
        setattr(f, "__name", name)
        setattr(f, "__description", description)
        setattr(f, "__type", type)
        return f

    if func is not None:
        return decorate(func)
    return decorate


class ToolProvider:
    """Base class of class-based tools: `__init__` parameters are init inputs, an @tool method is the tool."""

    def __init__(self, *args, **kwargs):
        pass


def log_metric(key, value, variant_id=None):
    """Record a metric for the current tool call (collected by the flowrt worker)."""
    hooks = sys.modules.get("_flowrt_hooks")
    if hooks is not None:
        hooks.log_metric(key, value, variant_id)
