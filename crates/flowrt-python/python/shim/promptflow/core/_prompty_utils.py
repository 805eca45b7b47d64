"""promptflow.core._prompty_utils compatibility: the prompt helpers flows import to render a
prompty's template themselves. Rendering and parsing are done by the flowrt host (in Rust), by the
same code that renders prompties and llm nodes, so the results are the same."""

import os

from promptflow.core._host import host_call

__all__ = ["convert_prompt_template", "parse_chat", "render_jinja_template"]


def convert_prompt_template(template, inputs, api):
    """The template rendered with `inputs` as a prompty renders it: a list of chat messages for
    api "chat", the prompt string for "completion"."""
    return host_call(
        "render_prompt_template",
        {"template": template, "inputs": dict(inputs or {}), "api": api, "dir": os.getcwd()},
    )


def render_jinja_template(prompt, trim_blocks=True, keep_trailing_newline=True, escape_dict=None, **kwargs):
    """The template rendered as text (promptflow's trim_blocks and keep_trailing_newline)."""
    if not trim_blocks or not keep_trailing_newline or escape_dict:
        raise NotImplementedError(
            "flowrt renders templates with promptflow's settings only "
            "(trim_blocks=True, keep_trailing_newline=True, no escape_dict)"
        )
    return convert_prompt_template(prompt, kwargs, "completion")


def parse_chat(chat_str, images=None, valid_roles=None, image_detail="auto"):
    """A rendered chat prompt split on its role lines into messages."""
    if images or valid_roles is not None or image_detail != "auto":
        raise NotImplementedError(
            "flowrt's parse_chat takes the text only (images, valid_roles and image_detail are not supported)"
        )
    return host_call("parse_chat", {"chat": chat_str})
