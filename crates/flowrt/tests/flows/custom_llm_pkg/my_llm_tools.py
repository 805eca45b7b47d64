"""Stands for a package's custom_llm tool (installed packages are imported the same way)."""
from promptflow.connections import CustomConnection
from promptflow.contracts.types import PromptTemplate
from promptflow.core import tool


@tool
def my_llm_tool(connection: CustomConnection, api: str, prompt: PromptTemplate, **kwargs) -> str:
    text = prompt
    for key, value in kwargs.items():
        text = text.replace("{{" + key + "}}", str(value))
    return f"{type(prompt).__name__}|{api}|{connection.configs['endpoint']}|{text}"
