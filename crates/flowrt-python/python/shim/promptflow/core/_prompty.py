"""promptflow.core.Prompty: load a .prompty file and call it like a function. The file is parsed,
rendered and sent to the model by the flowrt host (in Rust), over the worker's callback channel."""

import asyncio
import os

from promptflow.core._host import host_call
from promptflow.core._model_configuration import ModelConfiguration


class _Raw:
    """A model's raw reply (`response: all`) with attribute access: `.model`, `.usage.prompt_tokens`,
    `.choices[0].message.content`."""

    def __init__(self, data):
        object.__setattr__(self, "_data", data)

    def __getattr__(self, name):
        data = object.__getattribute__(self, "_data")
        if name in data:
            return _wrap(data[name])
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getitem__(self, key):
        return _wrap(self._data[key])

    def __contains__(self, key):
        return key in self._data

    def model_dump(self):
        return self._data

    def __repr__(self):
        return f"{type(self).__name__}({self._data!r})"


def _wrap(value):
    if isinstance(value, dict):
        return _Raw(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _plain(value):
    if isinstance(value, ModelConfiguration):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Prompty:
    """A loaded prompty; `Prompty.load(source, model={...})` overrides parts of the file's `model:`
    (merged key by key; a configuration *object* replaces the file's configuration as a whole)."""

    def __init__(self, path, model=None, **kwargs):
        self._path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self._path):
            raise FileNotFoundError(f"prompty file '{path}' does not exist (looked for {self._path})")
        model = dict(model or {})
        # A configuration object replaces the file's configuration whole, where a dict merges
        # into it key by key: it goes to the host apart from the rest of the model.
        configuration = model.get("configuration")
        if isinstance(configuration, ModelConfiguration):
            del model["configuration"]
            self._configuration = configuration.to_dict()
        else:
            self._configuration = None
        self._model = _plain(model)
        self._overrides = _plain(kwargs)

    @classmethod
    def load(cls, source, **kwargs):
        return cls(source, **kwargs)

    @property
    def _template(self):
        """The prompt body (what follows the front matter), as promptflow reads it."""
        return host_call("prompty_template", {"source": self._path})

    def _request(self, args, kwargs):
        if args:
            raise TypeError("Prompty can only be called with keyword arguments, e.g. prompty(question=...)")
        return {
            "source": self._path,
            "model": self._model,
            "configuration": self._configuration,
            "overrides": self._overrides,
            "inputs": kwargs,
        }

    @staticmethod
    def _result(reply):
        if isinstance(reply, dict) and reply.get("raw"):
            return _wrap(reply.get("output"))
        if isinstance(reply, dict) and isinstance(reply.get("chunks"), list):
            # A streamed reply: the model's chunks, one by one, as promptflow yields them.
            return (chunk for chunk in reply["chunks"])
        return reply.get("output") if isinstance(reply, dict) else reply

    def __call__(self, *args, **kwargs):
        return self._result(host_call("prompty", self._request(args, kwargs)))


class AsyncPrompty(Prompty):
    async def __call__(self, *args, **kwargs):
        request = self._request(args, kwargs)
        reply = await asyncio.get_running_loop().run_in_executor(None, host_call, "prompty", request)
        # A streamed reply is the same plain generator (promptflow 1.18.5's async stream cannot
        # be iterated at all).
        return self._result(reply)
