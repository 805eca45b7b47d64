"""promptflow.core._flow compatibility: flows import Prompty from here (promptflow's own module)."""

from promptflow.core._prompty import AsyncPrompty, Prompty

__all__ = ["AsyncPrompty", "Prompty"]
