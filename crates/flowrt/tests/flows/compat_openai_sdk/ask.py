import openai
from promptflow.connections import OpenAIConnection
from promptflow.core import tool


@tool
def ask(connection: OpenAIConnection, question: str) -> str:
    client = openai.OpenAI(api_key=connection.api_key, base_url=connection.base_url)
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
    )
    return reply.choices[0].message.content
