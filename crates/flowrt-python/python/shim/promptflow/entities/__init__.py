"""promptflow.entities compatibility: re-exports the connection classes."""

from promptflow.connections import AzureOpenAIConnection, CustomConnection, OpenAIConnection, ServerlessConnection

__all__ = ["AzureOpenAIConnection", "CustomConnection", "OpenAIConnection", "ServerlessConnection"]
