"""Renders a prompty's template with promptflow's private prompt helpers, as some flows do to
hand the messages to another client (no model is called)."""
from pathlib import Path

from promptflow.core import Prompty
from promptflow.core._prompty_utils import convert_prompt_template, parse_chat

HERE = Path(__file__).parent


def render(question: str, history: list = None):
    prompty = Prompty.load(HERE / "helper.prompty")
    template = prompty._template
    messages = convert_prompt_template(template, {"question": question, "history": history or []}, api="chat")
    prompt = convert_prompt_template("Q: {{question}}\n{% if question %}A:{% endif %}\n", {"question": question}, api="completion")
    parsed = parse_chat("system:\nBe brief.\n\nuser:\n" + question + "\n")
    return {"template": template, "messages": messages, "prompt": prompt, "parsed": parsed}
