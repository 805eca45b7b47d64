"""promptflow._sdk.entities compatibility: the connection classes, as promptflow re-exports them."""

from promptflow.connections import *  # noqa: F401,F403
from promptflow.connections import __all__  # noqa: F401
