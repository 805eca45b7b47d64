from promptflow.core import tool


@tool
def probe() -> str:
    try:
        import openai
        import tiktoken  # noqa: F401

        return f"openai {openai.__version__}"
    except ImportError as e:
        return f"missing: {e.name}"
