"""promptflow.entities compatibility: re-exports the connection classes."""

from promptflow.connections import (
    AzureOpenAIConnection,
    CustomConnection,
    CustomStrongTypeConnection,
    OpenAIConnection,
    ServerlessConnection,
)

__all__ = [
    "AzureOpenAIConnection",
    "CustomConnection",
    "CustomStrongTypeConnection",
    "OpenAIConnection",
    "ServerlessConnection",
]
