"""What promptflow.tools.openai and .aoai share: hand a call to the flowrt host."""

from promptflow.core._host import host_call


def _record(connection):
    if connection is None:
        raise TypeError("the llm tool needs a connection (an OpenAIConnection or AzureOpenAIConnection)")
    return {
        "name": getattr(connection, "name", None) or "inline",
        "type": getattr(type(connection), "TYPE", "custom"),
        "configs": {k: v for k, v in dict(getattr(connection, "configs", {}) or {}).items() if v is not None},
        "secrets": {k: v for k, v in dict(getattr(connection, "secrets", {}) or {}).items() if v is not None},
    }


def call(api, connection, prompt, params, kwargs):
    inputs = {k: v for k, v in params.items() if v is not None}
    inputs.update(kwargs)
    reply = host_call("llm", {"api": api, "connection": _record(connection), "prompt": prompt, "inputs": inputs})
    return reply.get("output") if isinstance(reply, dict) else reply
