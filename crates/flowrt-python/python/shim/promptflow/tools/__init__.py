"""promptflow.tools compatibility: the built-in LLM tools as functions Python code can call
(`from promptflow.tools.openai import chat`). The call runs in the flowrt host, in Rust, as an
`llm` node does: the prompt is rendered there and sent with the connection given."""
