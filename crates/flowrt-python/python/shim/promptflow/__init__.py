"""flowrt's promptflow compatibility shim (used only when the real promptflow is not installed)."""

from promptflow.core import ToolProvider, log_metric, tool
from promptflow.tracing import trace

__version__ = "0.0.0+flowrt"
__all__ = ["ToolProvider", "log_metric", "tool", "trace"]
