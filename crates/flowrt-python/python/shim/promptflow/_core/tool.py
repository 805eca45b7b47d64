"""promptflow._core.tool compatibility: `tool`, `ToolProvider`, `ToolType` and the input-setting
classes package tools declare (`InputSetting`, `DynamicList`, `GeneratedBy`). flowrt runs tools;
the settings only describe a tool's inputs to editors, so they are kept as given."""

from enum import Enum

from promptflow.core import ToolProvider, tool

__all__ = ["DynamicList", "GeneratedBy", "InputSetting", "ToolProvider", "ToolType", "tool"]


class ToolType(str, Enum):
    LLM = "llm"
    PYTHON = "python"
    PROMPT = "prompt"
    CUSTOM_LLM = "custom_llm"
    CSHARP = "csharp"
    TYPESCRIPT = "typescript"


class DynamicList:
    """Where an input's choices come from (a function and its arguments)."""

    def __init__(self, function, input_mapping=None):
        self.function = function
        self.input_mapping = input_mapping or {}


class GeneratedBy:
    """The functions that build an input's value from other settings, and back."""

    def __init__(self, function, reverse_function, input_settings=None):
        self.function = function
        self.reverse_function = reverse_function
        self.input_settings = input_settings or {}


class InputSetting:
    """Settings of a tool input, as promptflow's `InputSetting(**kwargs)` takes them."""

    def __init__(self, **kwargs):
        self.is_multi_select = kwargs.pop("is_multi_select", None)
        self.allow_manual_entry = kwargs.pop("allow_manual_entry", None)
        self.enabled_by = kwargs.pop("enabled_by", None)
        self.enabled_by_value = kwargs.pop("enabled_by_value", None)
        self.dynamic_list = kwargs.pop("dynamic_list", None)
        self.generated_by = kwargs.pop("generated_by", None)
        self._kwargs = kwargs
