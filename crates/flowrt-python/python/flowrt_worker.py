"""flowrt Python tool worker.

Speaks JSON lines on its original stdin/stdout (one request -> one tagged response), runs each
call on its own thread (async tools on one event loop thread), and captures each call's print()
output and log_metric() calls separately. Tools' own stdout never reaches the protocol pipe.

Request:  {"id": n, "node": str, "source": {"type": "code", "path": str} | {"type": "package", "tool": str},
           "args": [[name, {"k": "v"|"l"|"b"|"c", ...}], ...]}
          flex entries: "source": {"type": "entry", "entry": "module:attr", "init": {...} | null,
           "init_types": {name: type}, "aggregate": bool} (args are the converted flow inputs), or
          {"type": "signature", "entry": "module:attr"} (answers the entry's signature as the output)
          {"type": "meta", "dir": str, "path": str} (answers a code tool's inputs, or where loading it failed)
          {"type": "package_tools", "dir": str | null} (answers the tools installed packages declare)
          {"op": "shutdown"}
Response: {"id": n, "ok": true, "output": ..., "generator": bool, "chunks": [...], "joined": str,
           "stdout": str, "metrics": [[key, value], ...], "repr": str (a flex entry's dataclass result)}
          {"id": n, "ok": false, "kind": "tool"|"load", "error_type": str, "message": str, "traceback": str}

Host callbacks (the worker asks, the host answers; used by Prompty and model configurations):
  worker -> host  {"cb": n, "op": str, "args": {...}}   (on the protocol stdout, between responses)
  host -> worker  {"cb": n, "ok": true, "result": ...} | {"cb": n, "ok": false, "message": str}
"""

import asyncio
import base64
import collections.abc
import contextvars
import dataclasses
import datetime
import enum
import faulthandler
import importlib
import importlib.util
import inspect
import io
import json
import math
import os
import re
import sys
import threading
import time
import traceback
import types
import uuid
import typing

_THIS_FILE = os.path.abspath(__file__)
_CAPTURE = contextvars.ContextVar("flowrt_capture", default=None)


class _Capture(list):
    """A call's printed output; ``spans`` holds what ``@trace`` recorded during it."""

    def __init__(self):
        super().__init__()
        self.spans = []
_METRICS = contextvars.ContextVar("flowrt_metrics", default=None)
_CONNECTION_NAMES = ("CustomConnection", "OpenAIConnection", "AzureOpenAIConnection", "ServerlessConnection")


class LoadError(Exception):
    """The tool could not be loaded or bound (file, import, signature, inputs)."""

    def __init__(self, message, tb=""):
        super().__init__(message)
        self.tb = tb


class InputError(Exception):
    """A literal input could not be converted to the parameter's annotated type."""


# ---------------------------------------------------------------- stdout capture and metrics


class _StdoutDispatcher(io.TextIOBase):
    """sys.stdout replacement: writes go to the current call's buffer (a contextvar), else stderr."""

    def __init__(self, fallback):
        super().__init__()
        self._fallback = fallback

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return 1  # fd 1 is a dup of stderr (the protocol pipe is private)

    def write(self, s):
        buf = _CAPTURE.get()
        if buf is None:
            return self._fallback.write(s)
        buf.append(s)
        return len(s)

    def flush(self):
        if _CAPTURE.get() is None:
            try:
                self._fallback.flush()
            except Exception:
                pass


def _record_metric(key, value, variant_id=None):
    metrics = _METRICS.get()
    if metrics is None:
        sys.stderr.write(f"flowrt: log_metric({key!r}, {value!r}) outside of a tool call ignored\n")
        return
    metrics.append([str(key), value])


class HostCallError(Exception):
    """The host answered a callback with an error."""


class _HostChannel:
    """Requests from the worker to the host, answered on stdin; a calling thread blocks for its answer."""

    def __init__(self):
        self.send = None  # set by main(): writes one protocol line
        self.lock = threading.Lock()
        self.next_id = 0
        self.waiting = {}  # cb id -> [Event, reply]

    def call(self, op, args):
        if self.send is None:
            raise HostCallError("no flowrt host is attached to this worker")
        event = threading.Event()
        with self.lock:
            self.next_id += 1
            cb = self.next_id
            self.waiting[cb] = [event, None]
        try:
            self.send(json.dumps({"cb": cb, "op": op, "args": args}, ensure_ascii=False, default=_default))
            event.wait()
            reply = self.waiting[cb][1]
        finally:
            with self.lock:
                self.waiting.pop(cb, None)
        if not isinstance(reply, dict) or not reply.get("ok"):
            message = reply.get("message") if isinstance(reply, dict) else "the host closed the channel"
            raise HostCallError(message or f"host callback '{op}' failed")
        return reply.get("result")

    def deliver(self, reply):
        with self.lock:
            slot = self.waiting.get(reply.get("cb"))
        if slot is None:
            sys.stderr.write(f"flowrt worker: answer to unknown host callback {reply.get('cb')!r} ignored\n")
            return
        slot[1] = reply
        slot[0].set()


_HOST = _HostChannel()


def _install_hooks():
    hooks = types.ModuleType("_flowrt_hooks")
    hooks.log_metric = _record_metric
    hooks.host_call = _HOST.call
    hooks.HostCallError = HostCallError
    sys.modules["_flowrt_hooks"] = hooks


_PF_HOOKED = False


_PF_CONNECTIONS_HOOKED = False
# promptflow's connection TYPE by the class name the host reports
_PF_CONNECTION_TYPES = {"AzureOpenAIConnection": "AzureOpenAI", "OpenAIConnection": "OpenAI"}


def _host_connection_by_name(connection_name):
    """promptflow.core's get_connection_by_name, answered by flowrt: (the connection's fields, its TYPE)."""
    record = _HOST.call("connection", {"name": connection_name})
    value = dict(record.get("configs") or {})
    value.update(record.get("secrets") or {})
    cls = record.get("class") or "CustomConnection"
    kind = _PF_CONNECTION_TYPES.get(cls) or (cls[: -len("Connection")] if cls.endswith("Connection") else cls)
    return value, kind


def _hook_real_promptflow():
    """Best effort, when the real promptflow is used (a flow's requirements install it, so it shadows
    flowrt's shim): its Prompty looks connections up in flowrt's connections, not in promptflow's own
    local store (which is empty here), and a metric logger is registered with it."""
    global _PF_HOOKED, _PF_CONNECTIONS_HOOKED
    utils = sys.modules.get("promptflow.core._prompty_utils")
    if utils is not None and not _PF_CONNECTIONS_HOOKED:
        _PF_CONNECTIONS_HOOKED = True
        if hasattr(utils, "get_connection_by_name"):
            utils.get_connection_by_name = _host_connection_by_name
    if _PF_HOOKED:
        return
    mod = sys.modules.get("promptflow._core.metric_logger")
    if mod is None:
        return
    _PF_HOOKED = True
    try:
        add = getattr(mod, "add_metric_logger", None)
        if add is not None:
            add(_record_metric)
        else:
            mod.MetricLoggerManager.get_instance().add_metric_logger(_record_metric)
    except Exception as exc:  # pragma: no cover - depends on promptflow internals
        sys.stderr.write(f"flowrt: could not hook promptflow log_metric: {exc!r}\n")


# ---------------------------------------------------------------- loading tools

_LOCK = threading.RLock()
_MODULES = {}  # abs path -> module
_TOOLS = {}  # (kind, key) -> ToolInfo
_INSTANCES = {}  # (node, id(cls), init key) -> instance
_PF_MAIN = "__pf_main__"


def _is_tool(obj):
    return isinstance(obj, types.FunctionType) and (hasattr(obj, "__tool") or hasattr(obj, "__flowrt_tool"))


def _is_tool_provider(cls):
    if not isinstance(cls, type):
        return False
    for base in cls.__mro__[1:]:
        if base.__name__ == "ToolProvider" and str(base.__module__).startswith("promptflow"):
            return True
    return False


def _load_module(path, node):
    abspath = os.path.abspath(path)
    mod = _MODULES.get(abspath)
    if mod is not None:
        return mod
    if not os.path.isfile(abspath):
        raise LoadError(f"Tool file '{path}' of node '{node}' not found (looked for {abspath})")
    # As promptflow does, a tool file runs as a module named "__pf_main__" (so its
    # `if __name__ == "__main__":` block does not run). Unlike promptflow, the module being
    # loaded is also sys.modules["__pf_main__"], so a dataclass in a tool file that uses
    # `from __future__ import annotations` can be defined (promptflow fails to load such files).
    spec = importlib.util.spec_from_file_location(_PF_MAIN, abspath)
    if spec is None or spec.loader is None:
        raise LoadError(f"Cannot load tool file '{path}' of node '{node}': not a Python module")
    mod = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(_PF_MAIN)
    sys.modules[_PF_MAIN] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException as exc:
        if previous is None:
            sys.modules.pop(_PF_MAIN, None)
        else:
            sys.modules[_PF_MAIN] = previous
        raise LoadError(
            f"Failed to load tool file '{path}' of node '{node}': {type(exc).__name__}: {exc}", _format_tb(exc)
        ) from None
    _MODULES[abspath] = mod
    _hook_real_promptflow()
    return mod


class ToolInfo:
    __slots__ = ("func", "cls", "method", "label", "params", "var_kw", "init_params", "init_var_kw", "is_async")

    def __init__(self, label, func=None, cls=None, method=None):
        self.label = label
        self.func = func
        self.cls = cls
        self.method = method
        target = func if func is not None else getattr(cls, method)
        self.params, self.var_kw = _signature(target, skip_self=cls is not None, label=label)
        if cls is not None:
            self.init_params, self.init_var_kw = _signature(cls.__init__, skip_self=True, label=label)
            if cls.__init__ is object.__init__:
                self.init_params, self.init_var_kw = {}, False
        else:
            self.init_params, self.init_var_kw = {}, False
        original = _original(target)
        self.is_async = inspect.iscoroutinefunction(original) or inspect.isasyncgenfunction(original)

    def function_name(self):
        """The tool's function as promptflow's traces name it (its qualified name)."""
        target = self.func if self.func is not None else getattr(self.cls, self.method, None)
        return getattr(target, "__qualname__", None) or getattr(target, "__name__", None)


def _original(func):
    return getattr(func, "__original_function", func)


class _Param:
    __slots__ = ("name", "has_default", "kind")

    def __init__(self, name, has_default, kind):
        self.name = name
        self.has_default = has_default
        self.kind = kind


def _signature(func, skip_self, label):
    target = _original(func)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError) as exc:
        raise LoadError(f"Cannot read the signature of tool {label}: {exc}") from None
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    params = {}
    var_kw = False
    first = True
    for p in sig.parameters.values():
        if skip_self and first and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            first = False
            continue
        first = False
        if p.kind == p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind == p.VAR_POSITIONAL:
            continue
        ann = hints.get(p.name, p.annotation)
        params[p.name] = _Param(p.name, p.default is not p.empty, _classify(ann))
    return params, var_kw


def _classify(ann):
    """Map an annotation to a conversion kind: 'int', 'float', 'bool', 'str', 'list', 'dict',
    ('conn', (class or class name, ...)) or None (pass unchanged)."""
    if ann is inspect.Parameter.empty or ann is None:
        return None
    if _is_image_type(ann):
        return "image"
    if isinstance(ann, str):
        text = ann.strip().strip("'\"")
        names = tuple(name for name in _CONNECTION_NAMES if name in text)
        if names:
            return ("conn", names)
        base = text.split("[", 1)[0].strip()
        if base.startswith("typing."):
            base = base[len("typing.") :]
        if base in ("int", "float", "bool", "str", "list", "dict"):
            return base
        if base == "List":
            return "list"
        if base == "Dict":
            return "dict"
        if base == "Optional" and "[" in text:
            return _classify(text.split("[", 1)[1].rsplit("]", 1)[0])
        if base == "Union" and "[" in text:
            first = text.split("[", 1)[1].rsplit("]", 1)[0].split(",")[0].strip()
            return _classify(first)
        return None
    try:
        simple = _SIMPLE_TYPES.get(ann)
    except TypeError:
        # A value written as an annotation (`filter: {} = None`): promptflow passes the argument
        # as it is.
        return None
    if simple is not None:
        return simple
    if isinstance(ann, type) and ann.__name__ == "AssistantDefinition":
        return "assistant_definition"
    if isinstance(ann, type) and _is_connection_class(ann):
        return ("conn", (ann,))
    origin = typing.get_origin(ann)
    if origin is list:
        return "list"
    if origin is dict:
        return "dict"
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        members = [a for a in typing.get_args(ann) if a is not type(None)]
        conns = tuple(m for m in members if isinstance(m, type) and _is_connection_class(m))
        if conns:
            return ("conn", conns)
        if members:
            # promptflow types a Union by its first non-None member (Union[int, str] is int).
            return _classify(members[0])
    return None


_SIMPLE_TYPES = {int: "int", float: "float", bool: "bool", str: "str", list: "list", dict: "dict"}


def _is_connection_class(cls):
    name = getattr(cls, "__name__", "")
    if name in _CONNECTION_NAMES:
        return True
    if name.endswith("Connection") and str(getattr(cls, "__module__", "")).startswith("promptflow"):
        return True
    # A tool's own connection class: `class MyConnection(CustomStrongTypeConnection)`.
    return _is_strong_custom(cls)


def _is_strong_custom(cls):
    if not isinstance(cls, type):
        return False
    return any(
        base.__name__ == "CustomStrongTypeConnection" and str(base.__module__).startswith("promptflow")
        for base in cls.__mro__[1:]
    )


def _find_code_tool(path, node):
    mod = _load_module(path, node)
    funcs = []
    methods = []
    for _, obj in inspect.getmembers(mod):
        if _is_tool(obj) and getattr(obj, "__module__", None) == mod.__name__:
            funcs.append(obj)
        elif isinstance(obj, type) and obj.__module__ == mod.__name__ and _is_tool_provider(obj):
            for mname, member in inspect.getmembers(obj):
                if _is_tool(member):
                    methods.append((obj, mname))
    found = len(funcs) + len(methods)
    if found == 0:
        raise LoadError(
            f"NoToolDefined: no function decorated with @tool, and no ToolProvider subclass with an @tool method, "
            f"found in '{path}' (node '{node}')"
        )
    if found > 1:
        names = [f.__name__ for f in funcs] + [f"{c.__name__}.{m}" for c, m in methods]
        raise LoadError(f"MultipleToolsDefined: {len(names)} tools found in '{path}' (node '{node}'): {', '.join(names)}")
    if funcs:
        return ToolInfo(f"'{funcs[0].__name__}' in '{path}'", func=funcs[0])
    cls, mname = methods[0]
    return ToolInfo(f"'{cls.__name__}.{mname}' in '{path}'", cls=cls, method=mname)


def _find_package_tool(tool_id, node):
    parts = tool_id.split(".")
    last_error = None
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                last_error = exc
                continue
            raise LoadError(
                f"Failed to import package tool '{tool_id}' of node '{node}': {type(exc).__name__}: {exc}",
                _format_tb(exc),
            ) from None
        except BaseException as exc:
            raise LoadError(
                f"Failed to import package tool '{tool_id}' of node '{node}': {type(exc).__name__}: {exc}",
                _format_tb(exc),
            ) from None
        _hook_real_promptflow()
        rest = parts[cut:]
        owner = None
        try:
            for attr in rest:
                owner = obj
                obj = getattr(obj, attr)
        except AttributeError as exc:
            raise LoadError(f"Package tool '{tool_id}' of node '{node}' not found: {exc}") from None
        if isinstance(owner, type) and len(rest) >= 2:
            return ToolInfo(f"'{tool_id}'", cls=owner, method=rest[-1])
        if isinstance(obj, type):
            if callable(getattr(obj, "__call__", None)):
                return ToolInfo(f"'{tool_id}'", cls=obj, method="__call__")
        if not callable(obj):
            raise LoadError(f"Package tool '{tool_id}' of node '{node}' is not callable")
        return ToolInfo(f"'{tool_id}'", func=obj)
    raise LoadError(f"Package tool '{tool_id}' of node '{node}' not found: {last_error}")


def _prompt_template_param(info, node):
    """The name of the tool's parameter annotated as a PromptTemplate (custom_llm tools)."""
    target = _original(info.func if info.func is not None else getattr(info.cls, info.method))
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    for p in inspect.signature(target).parameters.values():
        ann = hints.get(p.name, p.annotation)
        name = ann if isinstance(ann, str) else getattr(ann, "__name__", "")
        if isinstance(name, str) and name.strip("'\"").split(".")[-1] == "PromptTemplate":
            return p.name
    raise LoadError(
        f"Invalid Custom LLM tool {info.label} of node '{node}': function "
        f"{getattr(target, '__name__', '?')} is missing a prompt template argument "
        f"(a parameter annotated as promptflow.contracts.types.PromptTemplate)"
    )


def _resolve(source, node):
    if source.get("type") == "package":
        key = ("package", source["tool"])
    else:
        key = ("code", os.path.abspath(source["path"]))
    info = _TOOLS.get(key)
    if info is not None:
        return info
    with _LOCK:
        info = _TOOLS.get(key)
        if info is None:
            if key[0] == "package":
                info = _find_package_tool(source["tool"], node)
            else:
                info = _find_code_tool(source["path"], node)
            _TOOLS[key] = info
    return info


# ---------------------------------------------------------------- argument conversion


# ---------------------------------------------------------------- images

_IMAGE_MARKER = "__flowrt_image__"
_MULTIMEDIA_KEY = re.compile(r"^data:image/(.*);(path|base64|url)$")


def _is_image_type(ann):
    if isinstance(ann, str):
        return ann.strip().strip("'\"").split(".")[-1] in ("Image", "PFBytes")
    return isinstance(ann, type) and ann.__name__ in ("Image", "PFBytes") and "multimedia" in (ann.__module__ or "")


def _image_from_dict(d):
    """An Image from flowrt's marker or promptflow's ``data:image/...`` dict, else None."""
    from promptflow.contracts.multimedia import Image

    if len(d) == 2 and d.get("type") in ("image_url", "image_file"):
        # openai-vision's form.
        inner = d.get(d["type"])
        if not isinstance(inner, dict):
            return None
        if d["type"] == "image_file" and isinstance(inner.get("path"), str):
            with open(inner["path"], "rb") as f:
                return Image(f.read())
        url = inner.get("url")
        if isinstance(url, str):
            return _image_from_string(url) if url.startswith("data:") else _image_from_url(url)
        return None
    if len(d) != 1:
        return None
    key, value = next(iter(d.items()))
    if key == _IMAGE_MARKER and isinstance(value, dict):
        return Image(base64.b64decode(value.get("base64", "")), mime_type=value.get("mime"))
    match = _MULTIMEDIA_KEY.match(key) if isinstance(key, str) else None
    if not match or not isinstance(value, str):
        return None
    # `image/*` (a path or URL given as a plain string): the type comes from the bytes.
    mime = None if match.group(1) == "*" else f"image/{match.group(1)}"
    resource = match.group(2)
    if resource == "path":
        with open(value, "rb") as f:
            return Image(f.read(), mime_type=mime)
    if resource == "base64":
        return Image(base64.b64decode(value.split(",")[-1]), mime_type=mime)
    return _image_from_url(value, mime)


def _image_from_url(url, mime=None):
    from promptflow.contracts.multimedia import Image
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as resp:
        return Image(resp.read(), mime_type=mime, source_url=url)


def _image_from_string(value):
    """promptflow's reading of a string given for an image: a data URI or bare base64, a URL,
    else a file path (relative to the flow's folder)."""
    from promptflow.contracts.multimedia import Image

    head, _, tail = value.partition(",")
    if tail and re.match(r"^data:image/(.*);base64$", head):
        return Image(base64.b64decode(tail), mime_type=head[5:].split(";")[0])
    if re.match(r"^https?://", value):
        return _image_from_url(value)
    with open(value, "rb") as f:
        return Image(f.read())


def _load_images(value):
    """Images in a value that crossed from flowrt, recursively, as Image objects."""
    if isinstance(value, dict):
        image = _image_from_dict(value)
        if image is not None:
            return image
        return {k: _load_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_load_images(v) for v in value]
    return value


def _convert(kind, value, name, node):
    if kind == "image":
        if isinstance(value, str):
            return _image_from_string(value)
        return _load_images(value)
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ValueError("not a bool")
        if kind == "str":
            return str(value)
        if kind == "list":
            if isinstance(value, list):
                return value
            if isinstance(value, str):
                try:
                    parsed = json.loads(value)
                except ValueError:
                    parsed = None
                if isinstance(parsed, list):
                    return parsed
            raise ValueError("not a list")
        if kind == "assistant_definition":
            return _load_assistant_definition(value, name, node) if isinstance(value, str) else value
        if kind == "dict":
            if isinstance(value, str):
                try:
                    return json.loads(value)
                except ValueError:
                    return value
            return value
    except (ValueError, TypeError, OverflowError):
        raise InputError(
            f"Input '{name}' for node '{node}' of value {_short_repr(value)} is not type {_type_label(kind)}."
        ) from None
    return value


def _unknown_connection(node, name, value, label, kind):
    return (
        f"Node '{node}' input '{name}': connection {_short_repr(value)} does not exist "
        f"(tool {label} takes a {_conn_label(kind)} there); create it with "
        f"`flowrt connection create --file CONN.yaml` or name an existing connection"
    )


def _conn_label(kind):
    names = [getattr(c, "__name__", str(c)) for c in kind[1]]
    return " or ".join(names) if names else "connection"


def _load_assistant_definition(value, name, node):
    """A literal for an `AssistantDefinition` parameter names a YAML file in the flow folder."""
    path = os.path.join(os.getcwd(), str(value))
    if not os.path.isfile(path):
        raise InputError(
            f"Input '{name}' for node '{node}': assistant definition file '{value}' does not exist in the flow folder."
        )
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        import yaml

        data = yaml.safe_load(text)
    except ImportError:
        data = json.loads(text)  # JSON is YAML too; without PyYAML only that form can be read
    from promptflow.contracts.types import AssistantDefinition

    return AssistantDefinition.deserialize(data or {})


def _type_label(kind):
    return {"float": "double", "dict": "object"}.get(kind, kind)


def _short_repr(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _connection_class(candidates, class_name):
    """The annotated class matching the connection's own class, else the connection's own class.
    A custom connection given to a parameter annotated with a custom strong-type connection class
    becomes that class, as in promptflow."""
    for cand in candidates:
        if getattr(cand, "__name__", cand) == class_name and isinstance(cand, type):
            return cand
    if class_name == "CustomConnection":
        for cand in candidates:
            if _is_strong_custom(cand):
                return cand
    from promptflow import connections as pf_connections

    return getattr(pf_connections, class_name, None) or pf_connections.CustomConnection


def _make_connection(kind, arg):
    name = arg.get("name")
    configs = dict(arg.get("configs") or {})
    secrets = dict(arg.get("secrets") or {})
    class_name = arg.get("class") or "CustomConnection"
    cls = _connection_class(kind[1], class_name)
    if cls.__name__ == "CustomConnection" or _is_strong_custom(cls):
        return cls(configs=configs, secrets=secrets, name=name)
    kwargs = dict(configs)
    kwargs.update(secrets)
    kwargs["name"] = name
    try:
        return cls(**kwargs)
    except TypeError:
        accepted = inspect.signature(cls).parameters
        if any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
            raise
        return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def _bind(params, var_kw, args, node, label, into, names_used):
    """Assemble keyword arguments for one callable from the request args."""
    for name, arg in args:
        param = params.get(name)
        if param is None:
            continue
        names_used.add(name)
        k = arg["k"]
        if k == "v":
            value = _load_images(arg.get("v"))
            if param.kind == "image" and isinstance(value, str):
                value = _image_from_string(value)
            into[name] = value
        elif k == "l":
            value = arg.get("v")
            if value is None or value == "":
                continue
            if isinstance(param.kind, tuple) and param.kind[0] == "conn":
                # flowrt sends a literal naming a stored connection as that connection; any
                # other literal for a connection parameter names one that does not exist.
                raise LoadError(_unknown_connection(node, name, value, label, param.kind))
            into[name] = _convert(param.kind, value, name, node) if param.kind is not None else value
        elif k == "b":
            if not param.has_default:
                into[name] = None
        elif k == "c":
            kind = param.kind
            if isinstance(kind, tuple) and kind[0] == "conn":
                into[name] = _make_connection(kind, arg)
            else:
                into[name] = arg.get("name")
        else:
            raise LoadError(f"Unknown argument kind {k!r} for input '{name}' of node '{node}'")
    missing = [p.name for p in params.values() if not p.has_default and p.name not in into]
    if missing:
        raise LoadError(f"Required input(s) {missing} are missing for node '{node}' (tool {label})")


def _bind_extra(var_kw, args, node, label, into, names_used):
    extra = [name for name, _ in args if name not in names_used]
    if not extra:
        return
    if not var_kw:
        raise LoadError(f"Input(s) {extra} of node '{node}' are not parameters of tool {label}")
    for name, arg in args:
        if name in names_used:
            continue
        k = arg["k"]
        if k in ("v", "l"):
            into[name] = arg.get("v")
        elif k == "b":
            into[name] = None
        elif k == "c":
            into[name] = arg.get("name")


def _init_key(kwargs):
    try:
        return json.dumps(kwargs, sort_keys=True, default=repr)
    except Exception:
        return repr(sorted(kwargs.items(), key=lambda kv: kv[0]))


def _prepare(info, node, args):
    """Return (callable, kwargs) for a call."""
    if info.cls is None:
        kwargs = {}
        used = set()
        _bind(info.params, info.var_kw, args, node, info.label, kwargs, used)
        _bind_extra(info.var_kw, args, node, info.label, kwargs, used)
        return _original(info.func), kwargs
    for name, arg in args:
        # As in promptflow, a class tool is initialized once from literals written in the flow;
        # a value that varies per line cannot be an __init__ input.
        if name in info.init_params and arg["k"] == "v":
            raise LoadError(
                f"Invalid input for {info.label} of node '{node}': initialization input '{name}' "
                f"requires a literal value, but a reference was received"
            )
    init_kwargs = {}
    used = set()
    _bind(info.init_params, info.init_var_kw, args, node, info.label, init_kwargs, used)
    method_args = [(n, a) for n, a in args if n not in info.init_params]
    kwargs = {}
    used_m = set()
    _bind(info.params, info.var_kw, method_args, node, info.label, kwargs, used_m)
    _bind_extra(info.var_kw, method_args, node, info.label, kwargs, used_m)
    key = (node, id(info.cls), _init_key(init_kwargs))
    instance = _INSTANCES.get(key)
    if instance is None:
        with _LOCK:
            instance = _INSTANCES.get(key)
            if instance is None:
                instance = info.cls(**init_kwargs)
                _INSTANCES[key] = instance
    method = getattr(info.cls, info.method)
    return _original(method).__get__(instance, info.cls), kwargs



# ---------------------------------------------------------------- flex flow entries

_ENTRIES = {}  # entry -> EntryInfo
_ENTRY_INSTANCES = {}  # (entry, init key) -> instance
_MODEL_CONFIG_NAMES = ("OpenAIModelConfiguration", "AzureOpenAIModelConfiguration")
_AZURE_API_VERSION = "2024-02-01"  # an Azure OpenAI connection's api_version when it names none


class EntryInitError(Exception):
    """The entry class's constructor failed."""


class EntryInfo:
    __slots__ = ("entry", "name", "cls", "func", "params", "init_params", "init_hints", "is_async",
                 "returns", "has_aggregate")

    def __init__(self, entry):
        self.entry = entry
        module_name, _, attr = entry.partition(":")
        module_name, attr = module_name.strip(), attr.strip()
        try:
            mod = importlib.import_module(module_name)
        except BaseException as exc:
            raise LoadError(
                f"Failed to load python module '{module_name}' of the flow entry '{entry}': "
                f"{type(exc).__name__}: {exc}\nhint: the module is a .py file (or package) in the flow folder, "
                f"named without .py",
                _format_tb(exc),
            ) from None
        _hook_real_promptflow()
        obj = mod
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(
                f"Failed to load the flow entry '{entry}': module '{module_name}' has no attribute '{attr}'"
            ) from None
        self.cls = obj if isinstance(obj, type) else None
        self.func = None if self.cls is not None else obj
        if self.cls is not None:
            if self.cls.__call__ is type.__call__ or not callable(getattr(self.cls, "__call__", None)):
                raise LoadError(f"The flow entry class '{entry}' has no __call__ method; define __call__(self, ...)")
            target = self.cls.__call__
            self.name = self.cls.__name__
        elif callable(obj):
            target = obj
            self.name = getattr(obj, "__name__", attr)
        else:
            raise LoadError(f"The flow entry '{entry}' is not a function or a class")
        self.params = _entry_ports(target, skip_self=self.cls is not None, entry=entry)
        if self.cls is not None and self.cls.__init__ is not object.__init__:
            self.init_params = _entry_ports(self.cls.__init__, skip_self=True, entry=entry)
            self.init_hints = _hints(self.cls.__init__)
        else:
            self.init_params, self.init_hints = [], {}
        original = _original(target)
        self.is_async = inspect.iscoroutinefunction(original) or inspect.isasyncgenfunction(original)
        self.returns = _hints(target).get("return", inspect.Signature.empty)
        if self.returns is inspect.Signature.empty:
            try:
                self.returns = inspect.signature(original).return_annotation
            except (TypeError, ValueError):
                self.returns = inspect.Signature.empty
        _check_return(self.returns, entry)
        self.has_aggregate = self.cls is not None and callable(getattr(self.cls, "__aggregate__", None))

    def signature(self):
        return {
            "name": self.name,
            "inputs": self.params,
            "init": self.init_params,
            "is_class": self.cls is not None,
            "has_aggregate": self.has_aggregate,
            "outputs": _output_ports(self.returns),
        }


def _output_ports(ann):
    """The output names a return annotation implies (fields of a dataclass or TypedDict, else the
    single `output`), or None when the entry is unannotated."""
    if ann is inspect.Signature.empty or ann is None:
        return None
    if isinstance(ann, type) and dataclasses.is_dataclass(ann):
        return [f.name for f in dataclasses.fields(ann)]
    if _is_typed_dict(ann):
        try:
            return list(typing.get_type_hints(ann))
        except Exception:
            return list(getattr(ann, "__annotations__", {}))
    return ["output"]


def _hints(func):
    try:
        return typing.get_type_hints(_original(func))
    except Exception:
        return getattr(_original(func), "__annotations__", {}) or {}


def _is_typed_dict(ann):
    return isinstance(ann, type) and issubclass(ann, dict) and hasattr(ann, "__annotations__") and hasattr(ann, "__total__")


def _check_return(ann, entry):
    if ann is inspect.Signature.empty or ann is None or ann is str:
        return
    if isinstance(ann, type) and (dataclasses.is_dataclass(ann) or _is_typed_dict(ann)):
        return
    origin = typing.get_origin(ann)
    if origin in (collections.abc.Iterator, collections.abc.Generator, collections.abc.AsyncIterator,
                  collections.abc.AsyncGenerator, collections.abc.Iterable):
        return
    shown = getattr(ann, "__name__", None) or str(ann)
    raise LoadError(
        f"The return annotation '{shown}' of the flow entry '{entry}' is not supported: annotate it with a "
        f"dataclass, a TypedDict or str, or remove the annotation"
    )


_FLOW_TYPES = {"int": "int", "float": "double", "bool": "bool", "str": "string", "list": "list", "dict": "object"}


def _entry_ports(func, skip_self, entry):
    target = _original(func)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError) as exc:
        raise LoadError(f"Cannot read the signature of the flow entry '{entry}': {exc}") from None
    hints = _hints(func)
    ports = []
    first = True
    for p in sig.parameters.values():
        if skip_self and first and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            first = False
            continue
        first = False
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        ann = hints.get(p.name, p.annotation)
        kind = _classify(ann)
        if kind is None and _is_typed_dict(ann):
            kind = "dict"
        port = {"name": p.name, "type": _FLOW_TYPES.get(kind) if isinstance(kind, str) else None,
                "has_default": p.default is not p.empty}
        if p.default is not p.empty:
            try:
                json.dumps(p.default)
                port["default"] = p.default
            except (TypeError, ValueError):
                port["default"] = None
        ports.append(port)
    return ports


def _entry(entry):
    info = _ENTRIES.get(entry)
    if info is None:
        with _LOCK:
            info = _ENTRIES.get(entry)
            if info is None:
                info = EntryInfo(entry)
                _ENTRIES[entry] = info
    return info


def _model_config(type_name, value):
    """A model configuration init kwarg given as a dict. As promptflow does when it builds a flex entry, a
    configuration that names a connection is resolved right away: the entry gets the connection's
    endpoint, version and key, and `connection` is None (the flow sees no connection name)."""
    from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration

    azure = "Azure" in type_name
    cls = AzureOpenAIModelConfiguration if azure else OpenAIModelConfiguration
    config = cls(**value)
    name = getattr(config, "connection", None)
    if not name:
        return config
    record = _HOST.call("connection", {"name": name})
    fields = dict(record.get("configs") or {})
    fields.update(record.get("secrets") or {})
    shown = record.get("class") or "CustomConnection"
    # promptflow reads the fields off the connection object: one of the other kind has none of them
    if azure and shown != "AzureOpenAIConnection":
        raise AttributeError(f"'{shown}' object has no attribute 'api_base'")
    if not azure and shown != "OpenAIConnection":
        raise AttributeError(f"'{shown}' object has no attribute 'base_url'")
    if azure:
        return cls(azure_deployment=config.azure_deployment, azure_endpoint=fields.get("api_base"),
                   api_version=fields.get("api_version") or _AZURE_API_VERSION, api_key=fields.get("api_key"))
    return cls(model=config.model, base_url=fields.get("base_url"), api_key=fields.get("api_key"),
               organization=fields.get("organization"))


def _init_value(info, name, value, init_types):
    """Model configurations given as dicts are built (their connection looked up), connection names
    for connection-typed kwargs become connection objects; the rest is passed as is."""
    ann = info.init_hints.get(name)
    names = [str(init_types.get(name) or ""), getattr(ann, "__name__", "") or str(ann or "")]
    if isinstance(value, dict):
        for type_name in names:
            if any(n in type_name for n in _MODEL_CONFIG_NAMES):
                return _model_config(type_name, value)
        return value
    if isinstance(value, str):
        kind = _classify(ann) if ann is not None else None
        if not (isinstance(kind, tuple) and kind[0] == "conn"):
            conns = tuple(n for n in _CONNECTION_NAMES if n in names[0])
            kind = ("conn", conns) if conns else None
        if kind is not None:
            record = _HOST.call("connection", {"name": value})
            return _make_connection(kind, record)
    return value


def _entry_instance(info, source):
    init = source.get("init") or {}
    key = (info.entry, _init_key(init))
    instance = _ENTRY_INSTANCES.get(key)
    if instance is not None:
        return instance
    with _LOCK:
        instance = _ENTRY_INSTANCES.get(key)
        if instance is None:
            try:
                init_types = source.get("init_types") or {}
                kwargs = {k: _init_value(info, k, v, init_types) for k, v in init.items()}
                instance = info.cls(**kwargs)
            except BaseException as exc:
                err = EntryInitError(f"Failed to initialize flow entry with '{init!r}', ex:'{exc}'")
                err.tb = _format_tb(exc)
                raise err from None
            _ENTRY_INSTANCES[key] = instance
    return instance


def _rebuild(cls, value):
    """A line's dataclass result again (it crossed the host as a dict of its fields)."""
    if not isinstance(value, dict):
        return value
    try:
        return cls(**value)
    except TypeError:
        return value


def _prepare_entry(info, source, args):
    """Return (callable, kwargs, label) for an entry (or __aggregate__) call."""
    values = {name: arg.get("v") for name, arg in args if arg.get("k") == "v"}
    if source.get("aggregate"):
        instance = _entry_instance(info, source)
        results = values.get("results") or []
        ret = info.returns
        if isinstance(ret, type) and dataclasses.is_dataclass(ret):
            results = [_rebuild(ret, r) for r in results]
        return (lambda: instance.__aggregate__(results)), {}, f"{info.name}.__aggregate__"
    known = {p["name"] for p in info.params}
    kwargs = {k: v for k, v in values.items() if k in known}
    if info.cls is None:
        return _original(info.func), kwargs, info.name
    instance = _entry_instance(info, source)
    return instance.__call__, kwargs, f"{info.name}.__call__"


# ---------------------------------------------------------------- running calls

_LOOP = None


def _event_loop():
    global _LOOP
    if _LOOP is None:
        with _LOCK:
            if _LOOP is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="flowrt-asyncio", daemon=True)
                thread.start()
                _LOOP = loop
    return _LOOP


async def _run_async(func, kwargs, buf, metrics):
    _CAPTURE.set(buf)
    _METRICS.set(metrics)
    result = func(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    if inspect.isasyncgen(result):
        chunks = []
        async for chunk in result:
            chunks.append(chunk)
        return _Drained(chunks)
    return result


class _Drained:
    __slots__ = ("chunks",)

    def __init__(self, chunks):
        self.chunks = chunks


def _is_stream(result):
    if inspect.isgenerator(result):
        return True
    if isinstance(result, (str, bytes, bytearray, dict, list, tuple, io.IOBase)):
        return False
    return isinstance(result, collections.abc.Iterator)


def _join_nested_streams(value, buf, metrics, depth=0):
    """Generators inside a dict or list output are joined into strings, as promptflow joins a
    generator flow output (`return {"answer": stream, ...}` read as `${node.output.answer}`)."""
    if depth > 100:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A dataclass output is written as its fields; a stream among them is joined first
        # (asdict would try to copy the generator and fail).
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if not any(_is_stream(v) or inspect.isasyncgen(v) for v in fields.values()):
            return value
        return {k: _join_nested_streams(v, buf, metrics, depth + 1) for k, v in fields.items()}
    if isinstance(value, dict):
        if not any(isinstance(v, (dict, list)) or _is_stream(v) or inspect.isasyncgen(v) for v in value.values()):
            return value
        return {k: _join_nested_streams(v, buf, metrics, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if not any(isinstance(v, (dict, list)) or _is_stream(v) or inspect.isasyncgen(v) for v in value):
            return value
        return [_join_nested_streams(v, buf, metrics, depth + 1) for v in value]
    if inspect.isasyncgen(value):

        async def _drain(agen=value):
            _CAPTURE.set(buf)
            _METRICS.set(metrics)
            return [chunk async for chunk in agen]

        chunks = asyncio.run_coroutine_threadsafe(_drain(), _event_loop()).result()
        return "".join(str(c) for c in chunks)
    if _is_stream(value):
        return "".join(str(c) for c in value)
    return value


def _default(obj):
    mime = getattr(obj, "_mime_type", None)
    if isinstance(obj, bytes) and isinstance(mime, str):
        # An Image (PFBytes) crosses to flowrt marked, so it is saved as promptflow saves images.
        return {_IMAGE_MARKER: {"mime": mime, "base64": base64.b64encode(obj).decode("ascii")}}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("utf-8", errors="replace")
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump()
        except Exception:
            pass
    return str(obj)


# JSON has no NaN or infinities: they travel as {"__flowrt_float__": "nan" | "inf" | "-inf"}, which
# flowrt prints as promptflow does (NaN, Infinity, -Infinity) and sends back to tools as floats.
_NONFINITE_KEY = "__flowrt_float__"
_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _nonfinite_marker(value):
    if math.isnan(value):
        return {_NONFINITE_KEY: "nan"}
    return {_NONFINITE_KEY: "inf" if value > 0 else "-inf"}


def _revive(obj):
    """Turn marker objects of a request back into floats."""
    if isinstance(obj, dict):
        if len(obj) == 1 and isinstance(obj.get(_NONFINITE_KEY), str) and obj[_NONFINITE_KEY] in _NONFINITE:
            return _NONFINITE[obj[_NONFINITE_KEY]]
        return {k: _revive(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_revive(v) for v in obj]
    return obj


def _sanitize(obj, depth=0):
    if depth > 100:
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _nonfinite_marker(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                key = json.dumps(key) if isinstance(key, (int, float, bool)) or key is None else str(key)
            out[key] = _sanitize(value, depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v, depth + 1) for v in obj]
    return _sanitize(_default(obj), depth + 1)


def _format_tb(exc):
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _THIS_FILE:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _check(req):
    """Before any line runs (promptflow resolves tools when it loads a flow): a literal given to a
    connection-typed parameter must name a connection. Tools that cannot be loaded are reported by
    their first call, as before."""
    rid = req.get("id")
    node = req.get("node", "")
    source = req.get("source") or {}
    if not (source.get("tool") or source.get("path")):
        # The host's readiness probe (a batch warming its workers): nothing to load.
        return _dumps({"id": rid, "ok": True, "output": None, "stdout": "", "metrics": []})
    buf = _Capture()
    token = _CAPTURE.set(buf)  # what loading the tool prints is the node's, as in a call
    try:
        info = _resolve(req.get("source") or {}, node)
    except Exception:
        info = None
    finally:
        _CAPTURE.reset(token)
    ok = _dumps({"id": rid, "ok": True, "output": None, "stdout": "".join(buf), "metrics": []})
    if info is None:
        return ok
    params = dict(info.params)
    params.update(info.init_params)
    for name, arg in req.get("args") or []:
        param = params.get(name)
        kind = param.kind if param is not None else None
        value = arg.get("v")
        if arg.get("k") == "l" and isinstance(kind, tuple) and kind[0] == "conn" and value not in (None, ""):
            message = _unknown_connection(node, name, value, info.label, kind)
            return _dumps(
                {"id": rid, "ok": False, "kind": "load", "error_type": "LoadError", "message": message, "traceback": ""}
            )
    return ok


def _call(func, kwargs, is_async, buf, metrics):
    """Call a tool or entry; awaitables are awaited on the event loop thread, generators drained."""
    _enter_operation_context()
    if is_async:
        future = asyncio.run_coroutine_threadsafe(_run_async(func, kwargs, buf, metrics), _event_loop())
        result = future.result()
    else:
        result = func(**kwargs)
        if inspect.isawaitable(result) or inspect.isasyncgen(result):

            async def _await(awaitable=result):
                _CAPTURE.set(buf)
                _METRICS.set(metrics)
                if inspect.isasyncgen(awaitable):
                    return _Drained([chunk async for chunk in awaitable])
                return await awaitable

            result = asyncio.run_coroutine_threadsafe(_await(), _event_loop()).result()
    if isinstance(result, _Drained):
        return True, result.chunks
    if _is_stream(result):
        return True, list(result)
    return False, result


class _EntryFailure(Exception):
    def __init__(self, error_type, message, tb):
        super().__init__(message)
        self.error_type = error_type
        self.tb = tb


def _run_entry(source, args, buf, metrics):
    if source.get("type") == "signature":
        return False, _entry(source.get("entry") or "").signature()
    info = _entry(source.get("entry") or "")
    func, kwargs, label = _prepare_entry(info, source, args)
    is_async = info.is_async and not source.get("aggregate")
    try:
        return _call(func, kwargs, is_async, buf, metrics)
    except BaseException as exc:
        # promptflow's wording: sync entries name the function, async ones only the exception.
        if is_async:
            message = f"{type(exc).__name__}: {exc}"
        else:
            message = f"Execution failure in '{label}': ({type(exc).__name__}) {exc}"
        raise _EntryFailure(type(exc).__name__, message, _format_tb(exc)) from None


_META_TYPES = {"str": "string", "int": "int", "float": "double", "bool": "bool", "list": "list", "dict": "object",
               "image": "image", "assistant_definition": "assistant_definition"}


def _meta_default(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _where_it_failed(exc, base):
    """The file (relative to `base`) and line a tool file's import failed at, as an editor shows it."""
    if isinstance(exc, SyntaxError) and exc.filename and os.path.abspath(exc.filename).startswith(base + os.sep):
        return os.path.relpath(os.path.abspath(exc.filename), base), exc.lineno
    found = (None, None)
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        name = os.path.abspath(frame.f_code.co_filename)
        if name.startswith(base + os.sep):
            found = (os.path.relpath(name, base), lineno)
    return found


def _tool_meta(source):
    """A code tool's inputs as promptflow's tool-meta generation reads them (its parameters, their
    types and defaults), from a draft of the flow in `dir`. The file is imported afresh each time
    (a draft changes between checks), and what it imported from the draft is forgotten after."""
    base = os.path.abspath(source.get("dir") or ".")
    rel = source.get("path") or ""
    path = os.path.join(base, rel)
    added = base not in sys.path
    if added:
        sys.path.insert(0, base)
    before = set(sys.modules)
    try:
        _MODULES.pop(os.path.abspath(path), None)
        try:
            info = _find_code_tool(path, rel)
        except LoadError as exc:
            cause = exc.__cause__ or exc.__context__
            file, line = (rel, None)
            message = str(exc).replace(path, rel)
            if isinstance(cause, BaseException):
                file, line = _where_it_failed(cause, base)
            return {"path": rel, "error": {"file": file or rel, "line": line, "message": message}}
        except BaseException as exc:  # a tool file that raises at import
            file, line = _where_it_failed(exc, base)
            return {"path": rel, "error": {"file": file or rel, "line": line, "message": f"{type(exc).__name__}: {exc}"}}
        target = info.func if info.func is not None else getattr(info.cls, info.method)
        sig = inspect.signature(_original(target))
        inputs = {}
        for name, param in info.params.items():
            kind = param.kind
            if isinstance(kind, tuple):
                types = [c if isinstance(c, str) else c.__name__ for c in kind[1]]
            else:
                types = [_META_TYPES.get(kind, "object")]
            p = sig.parameters.get(name)
            entry = {"type": types, "required": not param.has_default}
            if param.has_default and p is not None:
                entry["default"] = _meta_default(p.default)
            inputs[name] = entry
        return {"path": rel, "function": info.function_name(), "inputs": inputs}
    finally:
        _MODULES.pop(os.path.abspath(path), None)
        if added and base in sys.path:
            sys.path.remove(base)
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            origin = os.path.abspath(getattr(module, "__file__", None) or "/")
            if origin.startswith(base + os.sep):
                sys.modules.pop(name, None)


def _package_tools(source):
    """The tools installed packages declare, as promptflow finds them: each `package_tools` entry
    point is a function answering {tool_id: {name, description, type, inputs, ...}}. `dir` (the
    session's flow folder) is searched too, for packages vendored beside the flow."""
    import importlib.metadata as metadata

    base = source.get("dir")
    added = bool(base) and base not in sys.path
    if added:
        sys.path.insert(0, base)
    tools, errors = [], []
    try:
        found = metadata.entry_points()
        group = found.select(group="package_tools") if hasattr(found, "select") else found.get("package_tools", [])
        seen = set()
        for ep in group:
            if ep.name in seen:
                continue
            seen.add(ep.name)
            try:
                listed = ep.load()()
            except BaseException as exc:  # a package's own code: report it, list the others
                errors.append(f"package_tools entry point '{ep.name}': {type(exc).__name__}: {exc}")
                continue
            for tool_id, spec in (listed or {}).items():
                if not isinstance(spec, dict):
                    continue
                inputs = {}
                for name, meta in (spec.get("inputs") or {}).items():
                    meta = meta if isinstance(meta, dict) else {}
                    types = meta.get("type", ["object"])
                    entry = {"type": [str(t) for t in (types if isinstance(types, list) else [types])], "required": "default" not in meta}
                    if "default" in meta:
                        entry["default"] = _meta_default(meta["default"])
                    inputs[name] = entry
                tools.append(
                    {
                        "id": str(tool_id),
                        "name": str(spec.get("name") or tool_id),
                        "description": str(spec.get("description") or ""),
                        "type": str(spec.get("type") or "python"),
                        "inputs": inputs,
                    }
                )
    finally:
        if added and base in sys.path:
            sys.path.remove(base)
    tools.sort(key=lambda t: t["id"])
    return {"tools": tools, "errors": errors}


def _enter_operation_context():
    """Fill promptflow's operation context for the call about to run (when a tool uses it)."""
    module = sys.modules.get("promptflow.tracing._operation_context")
    if module is None:
        return
    try:
        ctx = module.OperationContext.get_instance()
        ctx.setdefault("flow_id", "default_flow_id")
        ctx["root_run_id"] = str(uuid.uuid4())
    except Exception:  # the real promptflow's context, or a changed one: leave it be
        pass


def _execute(req):
    if req.get("check"):
        return _check(req)
    rid = req.get("id")
    node = req.get("node", "")
    buf = _Capture()
    metrics = []
    function = None
    try:
        token_c = _CAPTURE.set(buf)
        token_m = _METRICS.set(metrics)
        try:
            source = req.get("source") or {}
            if source.get("type") == "meta":
                generator, result = False, _tool_meta(source)
            elif source.get("type") == "package_tools":
                generator, result = False, _package_tools(source)
            elif source.get("type") in ("entry", "signature"):
                generator, result = _run_entry(source, req.get("args") or [], buf, metrics)
                if not generator and source.get("type") == "entry" and not source.get("aggregate"):
                    # promptflow joins a flex entry's streams inside its dict or dataclass output.
                    result = _join_nested_streams(result, buf, metrics)
            else:
                info = _resolve(source, node)
                function = info.function_name()
                args = req.get("args") or []
                prompt_param = None
                if "prompt_template" in source:
                    # A custom_llm package tool: its template goes to the parameter typed as a
                    # PromptTemplate, as promptflow binds it.
                    prompt_param = _prompt_template_param(info, node)
                    args = [a for a in args if a[0] != prompt_param]
                    args.append([prompt_param, {"k": "l", "v": source["prompt_template"]}])
                func, kwargs = _prepare(info, node, args)
                if prompt_param is not None:
                    from promptflow.contracts.types import PromptTemplate

                    kwargs[prompt_param] = PromptTemplate(source["prompt_template"])
                generator, result = _call(func, kwargs, info.is_async, buf, metrics)
                if not generator:
                    result = _join_nested_streams(result, buf, metrics)
        finally:
            _CAPTURE.reset(token_c)
            _METRICS.reset(token_m)
        resp = {"id": rid, "ok": True}
        if function:
            # Its trace names the tool's function, as promptflow's `function` attribute does.
            resp["function"] = function
        if source.get("type") == "entry" and dataclasses.is_dataclass(result) and not isinstance(result, type):
            # `pf flow test` prints a flex entry's dataclass result as Python writes it.
            resp["repr"] = repr(result)
        if generator:
            resp["generator"] = True
            resp["chunks"] = result
            resp["joined"] = "".join(str(c) for c in result)
        else:
            resp["output"] = result
        resp["stdout"] = "".join(buf)
        resp["metrics"] = metrics
        if buf.spans:
            resp["spans"] = buf.spans
        return _dumps(resp)
    except LoadError as exc:
        return _dumps(
            {"id": rid, "ok": False, "kind": "load", "error_type": "LoadError", "message": str(exc), "traceback": exc.tb}
        )
    except InputError as exc:
        return _dumps(
            {"id": rid, "ok": False, "kind": "tool", "error_type": "InputTypeError", "message": str(exc), "traceback": ""}
        )
    except EntryInitError as exc:
        return _dumps(
            {"id": rid, "ok": False, "kind": "tool", "error_type": "FlowEntryInitializationError",
             "message": str(exc), "traceback": getattr(exc, "tb", ""), "stdout": "".join(buf)}
        )
    except _EntryFailure as exc:
        return _dumps(
            {"id": rid, "ok": False, "kind": "tool", "error_type": exc.error_type, "message": str(exc),
             "traceback": exc.tb, "stdout": "".join(buf)}
        )
    except BaseException as exc:  # the tool raised (incl. SystemExit, KeyboardInterrupt)
        message = str(exc)
        return _dumps(
            {
                "id": rid,
                "ok": False,
                "kind": "tool",
                "error_type": type(exc).__name__,
                "message": message,
                "traceback": _format_tb(exc),
            }
        )


def _dumps(obj):
    try:
        return json.dumps(obj, ensure_ascii=False, default=_default, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_sanitize(obj), ensure_ascii=False, default=str, allow_nan=False)


def _complete_namespace_promptflow():
    """With only promptflow-core installed, `promptflow` is a namespace package and
    `from promptflow import tool` fails; add the classic top-level names (best effort)."""
    try:
        import promptflow
        import promptflow.core as pf_core

        for name in ("tool", "log_metric", "ToolProvider"):
            if not hasattr(promptflow, name) and hasattr(pf_core, name):
                setattr(promptflow, name, getattr(pf_core, name))
        if not hasattr(promptflow, "trace"):
            try:
                from promptflow.tracing import trace

                promptflow.trace = trace
            except Exception:
                pass
    except Exception as exc:
        sys.stderr.write(f"flowrt: cannot complete the promptflow namespace package: {exc!r}\n")


def _install_tracer_provider():
    """Spans the flow's code makes with the OpenTelemetry API (``trace.get_tracer(...)``, and
    libraries instrumented with it) become spans of the current call, under its node's span and
    nested as they were started, beside ``@trace``'s: flowrt exports them with the line. Only
    when the environment has ``opentelemetry-api``; a provider the code sets itself wins (the
    API keeps the first one set, and this one is set before any code of the flow runs)."""
    try:
        from opentelemetry import trace as ot
    except Exception:
        return
    import contextlib
    import random

    try:
        import promptflow.tracing as pf_tracing

        shim_parent = getattr(pf_tracing, "_PARENT", None) if getattr(pf_tracing, "_FLOWRT_SHIM", False) else None
    except Exception:
        shim_parent = None

    def plain(v):
        if isinstance(v, (str, bool, int, float)):
            return v
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v][:100]
        return str(v)

    class _Span(ot.Span):
        def __init__(self, record, context):
            self._record = record
            self._context = context
            self._ended = False

        def get_span_context(self):
            return self._context

        def set_attributes(self, attributes):
            for k, v in (attributes or {}).items():
                self.set_attribute(k, v)

        def set_attribute(self, key, value):
            attrs = self._record.setdefault("attributes", {})
            if len(attrs) < 128:
                attrs[str(key)] = plain(value)

        def add_event(self, name, attributes=None, timestamp=None):
            pass

        def add_link(self, context, attributes=None):
            pass

        def update_name(self, name):
            self._record["name"] = str(name)

        def is_recording(self):
            return not self._ended

        def set_status(self, status, description=None):
            code = getattr(status, "status_code", status)
            if code == ot.StatusCode.ERROR:
                self._record["error"] = description or getattr(status, "description", None) or "error"

        def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
            self._record["error"] = f"{type(exception).__name__}: {exception}"

        def end(self, end_time=None):
            if not self._ended:
                self._ended = True
                self._record["end"] = end_time / 1e9 if end_time else time.time()

    class _Tracer(ot.Tracer):
        def start_span(self, name, context=None, kind=ot.SpanKind.INTERNAL, attributes=None,
                       links=None, start_time=None, record_exception=True,
                       set_status_on_exception=True):
            capture = _CAPTURE.get()
            spans = getattr(capture, "spans", None)
            if spans is None:
                return ot.INVALID_SPAN
            current = ot.get_current_span(context)
            if isinstance(current, _Span):
                parent = current._record["id"]
            else:
                parent = shim_parent.get() if shim_parent is not None else None
            record = {"id": len(spans) + 1, "parent": parent, "name": str(name),
                      "start": start_time / 1e9 if start_time else time.time(), "inputs": {}}
            spans.append(record)
            span = _Span(record, ot.SpanContext(random.getrandbits(128) or 1, random.getrandbits(64) or 1,
                                                is_remote=False, trace_flags=ot.TraceFlags(1)))
            span.set_attributes(attributes)
            return span

        @contextlib.contextmanager
        def start_as_current_span(self, name, context=None, kind=ot.SpanKind.INTERNAL,
                                  attributes=None, links=None, start_time=None,
                                  record_exception=True, set_status_on_exception=True,
                                  end_on_exit=True):
            span = self.start_span(name, context, kind, attributes, links, start_time)
            # @trace'd functions called inside nest under it too.
            token = shim_parent.set(span._record["id"]) if shim_parent is not None and isinstance(span, _Span) else None
            try:
                with ot.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                                 set_status_on_exception=set_status_on_exception) as current:
                    yield current
            finally:
                if token is not None:
                    shim_parent.reset(token)

    class _Provider(ot.TracerProvider):
        def get_tracer(self, *args, **kwargs):
            return _Tracer()

    try:
        ot.set_tracer_provider(_Provider())
    except Exception:
        pass


def _install_tracer_provider_on_import():
    """Install the tracer provider when ``opentelemetry.trace`` is first imported, right after it
    runs and before the importing code goes on: importing it costs a fifth of a second, which a
    worker whose flow never uses OpenTelemetry should not pay at every start."""
    if "opentelemetry.trace" in sys.modules:
        _install_tracer_provider()
        return

    class _Hook:
        def find_spec(self, fullname, path=None, target=None):
            if fullname != "opentelemetry.trace":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            loader = getattr(spec, "loader", None)
            if loader is None or not hasattr(loader, "exec_module"):
                return spec
            run = loader.exec_module

            def exec_module(module):
                run(module)
                _install_tracer_provider()

            loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Hook())


def main():
    faulthandler.enable(file=sys.__stderr__)
    proto_out = os.fdopen(os.dup(1), "wb")
    proto_in = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # anything writing to fd 1 directly lands in stderr, never in the protocol
    sys.stdout = _StdoutDispatcher(sys.stderr)

    flow_dir = os.getcwd()
    script_dir = os.path.dirname(_THIS_FILE)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != script_dir]
    sys.path.insert(0, flow_dir)
    shim = os.path.join(script_dir, "shim")
    spec = importlib.util.find_spec("promptflow")
    if spec is None:
        sys.path.append(shim)
        # flowrt's @trace records spans into the current call's capture.
        try:
            import promptflow.tracing as pf_tracing

            if getattr(pf_tracing, "_FLOWRT_SHIM", False):
                pf_tracing._flowrt_capture = _CAPTURE
        except Exception:
            pass
    elif spec.origin is None:
        _complete_namespace_promptflow()
    _install_hooks()
    _install_tracer_provider_on_import()

    write_lock = threading.Lock()

    def send(text):
        data = text.encode("utf-8", errors="surrogatepass") + b"\n"
        with write_lock:
            proto_out.write(data)
            proto_out.flush()

    _HOST.send = send

    def run(req):
        try:
            text = _execute(req)
        except BaseException as exc:  # serialization failure or worker bug
            text = json.dumps(
                {
                    "id": req.get("id"),
                    "ok": False,
                    "kind": "tool",
                    "error_type": type(exc).__name__,
                    "message": f"flowrt worker failed to run the call: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )
        send(text)

    _Dispatcher(proto_in, run, int(os.environ.get("FLOWRT_WORKER_THREADS", "256"))).serve()
    try:
        sys.stderr.flush()
    finally:
        os._exit(0)


class _Dispatcher:
    """Runs calls where they are read, and keeps reading while calls block.

    One thread holds the *reader role*: it reads a request, frees the role and runs the call
    itself (no thread handoff, so sequential calls are cheap). When the call ends and nobody has
    taken the role, it reads the next request. A monitor thread hands a free role to a parked
    thread (or a new one, up to `max_threads`) once a call has run for longer than `HANDOFF_S`, so
    slow or blocking tools never stop other requests from being read and run concurrently.
    """

    HANDOFF_S = 0.0005
    ACTIVE_POLL_S = 0.0005
    IDLE_POLL_S = 0.01

    def __init__(self, proto_in, run, max_threads):
        self.proto_in = proto_in
        self.run = run
        self.max_threads = max(2, max_threads)
        self.cv = threading.Condition(threading.Lock())
        self.role_free = False  # True while the role holder runs a call and nobody reads
        self.busy_since = 0.0
        self.last_activity = 0.0
        self.executing = 0
        self.idle = 0
        self.handoffs = 0
        self.threads = 1
        self.stopped = False

    def serve(self):
        threading.Thread(target=self.monitor, name="flowrt-monitor", daemon=True).start()
        self.loop()
        with self.cv:
            while self.executing > 0:
                self.cv.wait()

    def monitor(self):
        clock = time.monotonic
        while True:
            now = clock()
            with self.cv:
                if self.stopped:
                    return
                if self.role_free and now - self.busy_since >= self.HANDOFF_S:
                    self.role_free = False
                    if self.idle > 0:
                        self.handoffs += 1
                        self.cv.notify_all()
                    elif self.threads < self.max_threads:
                        self.threads += 1
                        threading.Thread(target=self.loop, name="flowrt-call", daemon=True).start()
                    else:
                        self.role_free = True  # every thread is busy: wait for one to finish
                active = now - self.last_activity < 0.05
            time.sleep(self.ACTIVE_POLL_S if active else self.IDLE_POLL_S)

    def loop(self):
        """Runs while holding the reader role; parks when another thread took it over."""
        clock = time.monotonic
        while True:
            line = self.proto_in.readline()
            if not line:
                with self.cv:
                    self.stopped = True
                    self.threads -= 1
                    self.cv.notify_all()
                return
            req = self.parse(line)
            if req is None:
                continue
            with self.cv:
                self.role_free = True
                self.busy_since = self.last_activity = clock()
                self.executing += 1
            try:
                self.run(req)
            finally:
                with self.cv:
                    self.executing -= 1
                    if self.stopped:
                        self.threads -= 1
                        self.cv.notify_all()
                        return
                    if self.role_free:
                        self.role_free = False  # nobody took over: keep reading
                        continue
                    self.idle += 1
                    while self.handoffs == 0 and not self.stopped:
                        self.cv.wait()
                    self.idle -= 1
                    if self.stopped:
                        self.threads -= 1
                        self.cv.notify_all()
                        return
                    self.handoffs -= 1

    def parse(self, line):
        line = line.strip()
        if not line:
            return None
        try:
            req = json.loads(line)
        except ValueError as exc:
            sys.stderr.write(f"flowrt worker: bad request line ignored: {exc}\n")
            return None
        if req.get("op") == "shutdown":
            sys.stderr.flush()
            os._exit(0)
        if "cb" in req:
            _HOST.deliver(req)
            return None
        if _NONFINITE_KEY.encode() in line:
            req = _revive(req)
        return req


if __name__ == "__main__":
    main()
