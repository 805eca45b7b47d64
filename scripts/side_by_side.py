#!/usr/bin/env python3
"""Side-by-side: run flows under promptflow and flowrt, compare.

Python 3 stdlib only. YAML is parsed by a small driver run with promptflow's Python (it has PyYAML);
the same driver runs promptflow through its SDK as `pf flow test` does (`flows.test` with
stream_output and allow_generator_output off, so an LLM reply is not streamed into the outputs).

  python3 scripts/side_by_side.py --repo /tmp/pfrepo --pf /tmp/pfvenv/bin/pf \
      --flowrt target/release/flowrt --fake-openai /work/shared/tools/fake_openai.py \
      [--only SUBSTRING] [--timeout 60] [--jobs 2] [--out results.json]
  python3 scripts/side_by_side.py --flows DIR [--flows DIR2 ...] --pf ... --flowrt ... \
      (--fake-openai SCRIPT | --openai-base URL) [--openai-connection NAME] [--azure-connection NAME]

A flow folder's side_by_side.json (a prompty's NAME.side_by_side.json), {"inputs": {...}, "init": {...}},
names the inputs both runtimes get, before anything else (a fixture's own choice).

Flows: folders with flow.dag.yaml (dag) or flow.flex.yaml (flex), and .prompty files (prompty), found
anywhere under src/promptflow/tests/test_configs and examples/flows of a promptflow checkout (--repo),
or under any folder given with --flows (a clone of another repository, a folder of fixtures); their
paths in the table start with the folder's name. The model server is a fake the script starts
(--fake-openai, a script that prints "listening on PORT" for --port 0) or one already running
(--openai-base). Inputs: the `sample:` of a prompty or flex flow,
else the declared defaults (when every input has one, `{}` is passed), else samples.json, else the
first line of data.jsonl (or inputs.jsonl). Every input still without a value or a default is then
synthesized from its declared type (string "hello", int 1, double 1.5, bool true, list [], object {},
a chat history [], an image: the smallest image file in the flow folder, else a 1x1 PNG data URI);
such flows are marked inputs_source "...synthesized" (`--no-synthesize` skips them, "no inputs").
A flex entry's inputs and init kwargs are read from flow.flex.yaml and from the entry's signature
(ast, the code is not imported); an init kwarg without a value (sample `init:`, init.json) is
synthesized the same way, a model configuration naming the connections this script creates
(AzureOpenAIModelConfiguration: azure_open_ai_connection, OpenAIModelConfiguration:
open_ai_connection) and a connection-typed one the connection's name. An image input whose value is a
web address (there is no network here) gets the local image instead. Both runtimes always get the
same inputs and init.

promptflow runs each flow in a child forked from a driver that has imported it once (`--jobs`
drivers), so a flow costs its run and not promptflow's three-second import; `--pf-fresh` starts a
process of its own for each flow instead.

Each runtime gets its own copy of the flow tree (so relative paths outside a flow folder still work
and files a runtime writes don't leak into the other's run), and a fresh HOME / PF_HOME_DIRECTORY /
FLOWRT_HOME per script run; a fake managed identity endpoint (IDENTITY_ENDPOINT) answers the
Microsoft Entra ID token requests of flows that call Azure OpenAI without a key. Connections commonly referenced by the flows are created in both
runtimes, pointed at the fake OpenAI server, all with key `fake-key`. Flows without a
requirements.txt run on promptflow's venv under pf and on flowrt's base environment (openai,
python-dotenv and the rest of promptflow's run-time dependencies) under flowrt, or on
`--flowrt-python` as it is when given (for example one with every package of promptflow's venv,
`pip freeze | grep -vi '^promptflow'`, for flows that import promptflow's tooling's packages).

Classification per flow: skipped (no inputs), pf_failed (excluded from the denominator), identical,
different (both ok, outputs differ), flowrt_failed (promptflow succeeded, flowrt did not). A file
either runtime writes under `.promptflow/output/<uuid>.<ext>` (generated images) is compared by its
path with the random uuid stem replaced by <UUID> (folder and extension still count) and by a digest
of its bytes, so a wrong extension or content is a difference and a random file name is not. A
different flow is run under promptflow up to 6 more times: when one of those runs gives exactly
flowrt's outputs (a flow that picks at random), it counts as identical (identical_to_pf_run says
which run); when promptflow's own runs differ (random choices, `id(self)`) but none is flowrt's and
every output that is the same in all of them matches flowrt's, it counts as "matching" (a second
column beside "identical"), listed with the reason "promptflow itself differs between its runs".
A value that is different in every one of promptflow's 7 runs (a truly random value: `id(self)`, a
fresh uuid run id) has no reproducible content: it is compared by its kind (JSON type; for a string
its text with uuids, hex addresses and numbers blanked), and a flow identical apart from such values,
whose flowrt values have the same kind, counts as identical; the report lists these flows and paths.
Likewise a flow whose own code fails at random: when flowrt fails where promptflow succeeded with an
exception the flow's code raised, and one of promptflow's reruns fails with the same exception type
and message, flowrt's outcome is one of promptflow's (listed as identical to that run).
"""
import argparse
import hashlib
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOTS = ["src/promptflow/tests/test_configs", "examples/flows"]
REL_TOL = 1e-6
PF_RERUNS = 6  # extra promptflow runs of a flow whose outputs differ from flowrt's (or that fails only in flowrt)

OPENAI_NAMES = ["open_ai_connection", "your_open_ai_connection", "new_ai_connection", "test_llm_connection",
                "openai_connection", "oai_connection"]
AZURE_NAMES = ["azure_open_ai_connection", "aoai_connection", "aoai_gpt4v_connection", "aoai_assistant_connection",
               "azure_openai", "azure_openai_connection", "gpt4v_connection"]
EXTRA_OPENAI_NAMES, EXTRA_AZURE_NAMES = [], []  # --openai-connection, --azure-connection
CUSTOM_NAMES = ["custom_connection", "custom_connection_2", "custom_connection_3", "basic_custom_connection",
                "serp_connection", "azure_ai_language", "azure_ai_translator", "custom_strong_type_connection",
                "azure_content_safety_connection", "bing_connection"]

# ----------------------------------------------------------------------------------------------------
# driver, run with promptflow's Python
# ----------------------------------------------------------------------------------------------------
PF_DRIVER = r'''
import argparse, dataclasses, json, os, re, sys, types
from collections.abc import Mapping

OPENAI_NAMES = json.loads(os.environ.get("SBS_OPENAI_NAMES", "[]"))
AZURE_NAMES = json.loads(os.environ.get("SBS_AZURE_NAMES", "[]"))


def setup_home():
    home = os.environ["SBS_HOME"]
    os.environ["HOME"] = home
    pf_home = os.path.join(home, ".promptflow")
    os.environ["PF_HOME_DIRECTORY"] = pf_home
    os.makedirs(pf_home, exist_ok=True)
    cfg = os.path.join(pf_home, "pf.yaml")
    if not os.path.exists(cfg):
        with open(cfg, "w") as f:
            f.write("telemetry:\n  enabled: 'false'\ntrace:\n  destination: none\n")


def plain(value):
    if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType)) or (
        hasattr(value, "__next__") and hasattr(value, "__iter__") and not isinstance(value, (str, bytes, dict, list))
    ):
        return "".join(str(chunk) for chunk in value)
    return value


def as_outputs(value):
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return {"output": value}


def yaml_load(text):
    try:
        import yaml
        return yaml.safe_load(text)
    except ImportError:
        from ruamel.yaml import YAML
        return YAML(typ="safe", pure=True).load(text)


def read_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml_load(f.read()) or {}


def prompty_front(path):
    text = open(path, encoding="utf-8").read()
    if not text.lstrip().startswith("---"):
        return {}
    body = text.lstrip()[3:]
    end = body.find("\n---")
    return yaml_load(body[:end]) or {}


def load_sample_value(base, value):
    if isinstance(value, str) and value.startswith("${file:") and value.endswith("}"):
        value = value[len("${file:"):-1]
    if isinstance(value, dict):
        return {k: load_sample_value(base, v) if isinstance(v, str) and v.startswith("${file:") else v
                for k, v in value.items()}
    if isinstance(value, str):
        p = os.path.join(base, value)
        if os.path.isfile(p):
            if p.endswith(".jsonl"):
                with open(p, encoding="utf-8") as f:
                    for line in f:
                        if line.strip():
                            return json.loads(line)
                return None
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        return None
    return value


def first_line(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return json.loads(line)
    return None


# placeholders by declared type (flow.dag.yaml / prompty `type:`, or a Python annotation's name)
PLACEHOLDERS = {"string": "hello", "str": "hello", "int": 1, "double": 1.5, "float": 1.5, "bool": True,
                "list": [], "object": {}, "dict": {}, "chat_history": [], "any": "hello"}
AZURE_CONN, OPENAI_CONN, CUSTOM_CONN = "azure_open_ai_connection", "open_ai_connection", "custom_connection"
# a 1x1 PNG, for an image input when the flow folder holds no image file
TINY_PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAA"
            "AABJRU5ErkJggg==")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


def find_image(folder):
    """A small image file in the flow folder (or below it), as a path relative to the folder."""
    best = None
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in (".promptflow", "__pycache__", ".runs"))
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTS):
                p = os.path.join(dirpath, name)
                size = os.path.getsize(p)
                if size and (best is None or size < best[0]):
                    best = (size, os.path.relpath(p, folder))
        if best:
            break  # prefer the shallowest folder that has one
    return best[1] if best else None


def annotation_name(node):
    """'str', 'List', 'AzureOpenAIModelConfiguration', ... of an ast annotation (None when absent)."""
    import ast
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return node.value
    if isinstance(node, ast.Subscript):
        base = annotation_name(node.value)
        if base in ("Optional", "Union"):
            inner = node.slice
            if isinstance(inner, ast.Tuple):
                inner = inner.elts[0]
            return annotation_name(inner)
        return base
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.BinOp):  # `str | None`
        return annotation_name(node.left)
    return None


def signature_params(fn):
    """[(name, annotation name, has default)] of a def (self/cls, *args, **kwargs left out)."""
    a = fn.args
    pos = list(a.posonlyargs) + list(a.args)
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    out = []
    for i, (arg, d) in enumerate(zip(pos, defaults)):
        if i == 0 and arg.arg in ("self", "cls"):
            continue
        out.append((arg.arg, annotation_name(arg.annotation), d is not None))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, annotation_name(arg.annotation), d is not None))
    return out


def entry_signatures(folder, entry, code=None):
    """(call params, init params or None) of a flex entry `module:function` / `module:Class`, read with ast
    (the user's code is not imported). None when the source cannot be found."""
    import ast
    if not isinstance(entry, str) or ":" not in entry:
        return None
    module, attr = entry.split(":", 1)
    base = os.path.join(folder, code) if code else folder
    candidates = [os.path.join(base, *module.split(".")) + ".py",
                  os.path.join(base, *module.split("."), "__init__.py")]
    src = next((c for c in candidates if os.path.isfile(c)), None)
    if src is None:
        return None
    with open(src, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr:
            return signature_params(node), None
        if isinstance(node, ast.ClassDef) and node.name == attr:
            call = init = None
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if item.name == "__call__":
                        call = signature_params(item)
                    elif item.name == "__init__":
                        init = signature_params(item)
            return call or [], init or []
    return None


def placeholder(name, kind, folder):
    """(value, ok) for one input or init kwarg without a value, by its declared type."""
    k = str(kind or "string")
    low = k.lower()
    if k == "AzureOpenAIModelConfiguration":
        return {"connection": AZURE_CONN, "azure_deployment": "gpt-35-turbo"}, True
    if k == "OpenAIModelConfiguration":
        return {"connection": OPENAI_CONN, "model": "gpt-35-turbo"}, True
    if k in ("AzureOpenAIConnection",):
        return AZURE_CONN, True
    if k in ("OpenAIConnection",):
        return OPENAI_CONN, True
    if k.endswith("Connection"):
        return CUSTOM_CONN, True
    if low == "image" or k in ("Image", "PFBytes"):
        img = find_image(folder)
        return (img if img else TINY_PNG), True
    if "history" in name and low in ("list", "chat_history", "string", "any"):
        return [], True
    if low in ("list", "sequence", "tuple", "set"):
        return [], True
    if low in ("dict", "mapping", "object", "typeddict"):
        return {}, True
    if low in PLACEHOLDERS:
        return PLACEHOLDERS[low], True
    return None, False


def declared_kind(spec):
    if isinstance(spec, dict):
        return spec.get("type", "string")
    return "string"


def has_default(spec):
    return isinstance(spec, dict) and "default" in spec


def init_synth_needed(declared_init, init):
    return any(not has_default(spec) and not (isinstance(init, dict) and name in init)
               for name, spec in declared_init.items())


def pick(path, fmt):
    """{"inputs": {...}, "init": {...}|None, "source": ...} or {"skip": reason}.

    Values come from, in order: declared defaults, the `sample:` (prompty/flex), samples.json, the first line
    of data.jsonl / inputs.jsonl; every input (and flex init kwarg) still without a value or a default is
    synthesized from its declared type. A flex entry's parameters come from flow.flex.yaml and from the entry's
    signature (read with ast), so inputs a flex yaml does not declare are filled too."""
    folder = path if fmt != "prompty" else os.path.dirname(path)
    if fmt == "dag":
        doc = read_yaml(os.path.join(path, "flow.dag.yaml"))
    elif fmt == "flex":
        doc = read_yaml(os.path.join(path, "flow.flex.yaml"))
    else:
        doc = prompty_front(path)
    declared = doc.get("inputs") or {}
    if not isinstance(declared, dict):
        declared = {}
    declared = dict(declared)
    declared_init = doc.get("init") if isinstance(doc.get("init"), dict) else {}
    declared_init = dict(declared_init)
    # a flex entry (and a flow.dag.yaml that names an `entry:`, the older eager format): its signature
    if doc.get("entry"):
        try:
            sig = entry_signatures(folder, doc.get("entry"), doc.get("code"))
        except Exception:
            sig = None
        if sig:
            call, init_params = sig
            for name, ann, dflt in call:
                if name not in declared:
                    declared[name] = {"type": ann or "string", **({"default": None} if dflt else {})}
                elif isinstance(declared[name], dict) and dflt and "default" not in declared[name]:
                    declared[name] = dict(declared[name], default=None)
            for name, ann, dflt in init_params or []:
                spec = declared_init.get(name)
                if not isinstance(spec, dict):
                    declared_init[name] = {"type": ann or "string", **({"default": None} if dflt else {})}
                else:
                    # the annotation says more than the yaml's `type` (a model configuration, a connection)
                    if ann and (ann.endswith("Configuration") or ann.endswith("Connection")):
                        spec = dict(spec, type=ann)
                    if dflt and "default" not in spec:
                        spec = dict(spec, default=None)
                    declared_init[name] = spec
    init = None
    sample = None
    sources = []
    if fmt in ("flex", "prompty") and doc.get("sample") is not None:
        sample = load_sample_value(folder, doc.get("sample"))
        if fmt == "flex" and isinstance(sample, dict) and ("inputs" in sample or "init" in sample) and \
                all(k in ("inputs", "init") for k in sample):
            init = sample.get("init")
            if init is not None:
                sources.append("sample init")
            sample = sample.get("inputs")
    if fmt == "flex" and init is None and os.path.isfile(os.path.join(folder, "init.json")):
        # a class entry's constructor kwargs kept next to the flow (what the tests pass as init)
        with open(os.path.join(folder, "init.json"), encoding="utf-8") as f:
            init = json.load(f)
        sources.append("init.json")

    values = None
    pinned = os.path.join(folder, "side_by_side.json") if fmt != "prompty" else \
        os.path.splitext(path)[0] + ".side_by_side.json"
    if os.path.isfile(pinned):
        # a fixture's own choice, first: {"inputs": {...}, "init": {...}}
        with open(pinned, encoding="utf-8") as f:
            chosen = json.load(f)
        values, src = dict(chosen.get("inputs") or {}), os.path.basename(pinned)
        if chosen.get("init") is not None:
            init = chosen["init"]
    elif isinstance(sample, dict):
        values, src = dict(sample), "sample"
    elif declared and all(has_default(spec) for spec in declared.values()):
        values, src = {}, "defaults"
    elif not declared and fmt == "dag":
        values, src = {}, "no declared inputs"
    if values is None and fmt == "dag":
        for name in ("samples.json", "sample.json"):
            p = os.path.join(folder, name)
            if os.path.isfile(p):
                with open(p, encoding="utf-8") as f:
                    value = json.load(f)
                if isinstance(value, list) and value:
                    value = value[0]
                if isinstance(value, dict):
                    values, src = dict(value), name
                    break
    if values is None:
        for name in ("data.jsonl", "inputs.jsonl", "data/data.jsonl", "data/inputs.jsonl"):
            p = os.path.join(folder, name)
            if os.path.isfile(p):
                try:
                    value = first_line(p)
                except Exception:
                    continue
                if isinstance(value, dict):
                    if declared:
                        value = {k: v for k, v in value.items() if k in declared}
                    values, src = value, name
                    break
    if values is None:
        values, src = {}, (None if declared else "no declared inputs")
    # an image given by a web address cannot be fetched here (no network): a local image instead, for an
    # image-typed input's value and for `data:image/<fmt>;url` entries inside any input's value
    def local_image_dict():
        img = find_image(folder)
        if img:
            ext = img.rsplit(".", 1)[-1].lower()
            return {f"data:image/{'jpeg' if ext == 'jpg' else ext};path": img}
        return {"data:image/png;base64": TINY_PNG.split(",", 1)[1]}

    def without_urls(value):
        if isinstance(value, dict):
            if len(value) == 1:
                (k, v), = value.items()
                if re.match(r"^data:image/[^;]*;url$", k) and isinstance(v, str) and v.startswith(("http://", "https://")):
                    return local_image_dict(), True
            changed = False
            out = {}
            for k, v in value.items():
                out[k], c = without_urls(v)
                changed = changed or c
            return out, changed
        if isinstance(value, list):
            items = [without_urls(v) for v in value]
            return [v for v, _ in items], any(c for _, c in items)
        return value, False

    for name, spec in declared.items():
        current = values.get(name, spec.get("default") if isinstance(spec, dict) else None)
        if str(declared_kind(spec)).lower() == "image" and isinstance(current, str) and \
                current.startswith(("http://", "https://")):
            img = find_image(folder)
            values[name] = img if img else TINY_PNG
            sources.append(f"{name}: local image for a web address")
            continue
        replaced, changed = without_urls(current)
        if changed:
            values[name] = replaced
            sources.append(f"{name}: local image for a web address")
    synthesized = []
    for name, spec in declared.items():
        if name in values or has_default(spec):
            continue
        value, ok = placeholder(name, declared_kind(spec), folder)
        if not ok:
            return {"skip": f"no inputs (cannot synthesize type {declared_kind(spec)!r} of {name!r})"}
        values[name] = value
        synthesized.append(name)
    if (synthesized or init_synth_needed(declared_init, init)) and os.environ.get("SBS_NO_SYNTHESIZE") == "1":
        return {"skip": "no inputs"}
    if synthesized:
        src = "synthesized" if src in (None, "no declared inputs") else f"{src}+synthesized"
    # a model configuration given (init.json) with a connection of the other kind than its annotation says
    # (an OpenAI connection for an AzureOpenAIModelConfiguration) fails in promptflow before the flow runs:
    # name the script's connection of the annotated kind instead
    for name, spec in declared_init.items():
        kind = declared_kind(spec)
        given = init.get(name) if isinstance(init, dict) else None
        if not isinstance(given, dict) or not isinstance(given.get("connection"), str):
            continue
        conn = given["connection"]
        if kind == "AzureOpenAIModelConfiguration" and conn in OPENAI_NAMES:
            init = dict(init, **{name: dict(given, connection=AZURE_CONN)})
            sources.append(f"init {name}: an Azure OpenAI connection for {conn!r}")
        elif kind == "OpenAIModelConfiguration" and conn in AZURE_NAMES:
            init = dict(init, **{name: dict(given, connection=OPENAI_CONN)})
            sources.append(f"init {name}: an OpenAI connection for {conn!r}")
    # init kwargs without a value or default
    init_synth = []
    for name, spec in declared_init.items():
        if (isinstance(init, dict) and name in init) or has_default(spec):
            continue
        value, ok = placeholder(name, declared_kind(spec), folder)
        if not ok:
            return {"skip": f"no init (cannot synthesize type {declared_kind(spec)!r} of {name!r})"}
        init = dict(init or {})
        init[name] = value
        init_synth.append(name)
    if init_synth:
        sources.append("init synthesized")
    if src is None:
        src = "synthesized"
    if sources:
        src = src + " (" + ", ".join(sources) + ")"
    res = {"inputs": values, "init": init, "source": src}
    if synthesized:
        res["synthesized"] = synthesized
    if init_synth:
        res["init_synthesized"] = init_synth
    return res


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--flows", required=True)
    p = sub.add_parser("connection")
    p.add_argument("--file", required=True, action="append",
                   help="a connection YAML (repeatable: one process imports promptflow once for all)")
    p = sub.add_parser("test")
    p.add_argument("--flow", required=True)
    p.add_argument("--inputs", required=True)
    p.add_argument("--init", default=None)
    sub.add_parser("serve")
    args = parser.parse_args()
    if args.command == "serve":
        serve()
        return
    if args.command == "plan":
        with open(args.flows, encoding="utf-8") as f:
            flows = json.load(f)
        out = []
        for item in flows:
            try:
                item.update(pick(item["abs"], item["format"]))
            except Exception as e:
                item["skip"] = f"cannot read flow: {type(e).__name__}: {e}"
            out.append(item)
        print(json.dumps(out, default=str))
        return
    setup_home()
    from promptflow.client import PFClient
    pf = PFClient()
    try:
        if args.command == "connection":
            from promptflow._sdk._load_functions import load_connection
            # one line per file: {"file", "created"} or {"file", "error"}; a bad file fails only itself
            for file in args.file:
                try:
                    c = load_connection(source=file)
                    pf.connections.create_or_update(c)
                    print(json.dumps({"file": file, "created": c.name}), flush=True)
                except Exception as e:
                    print(json.dumps({"file": file, "error": f"{type(e).__name__}: {e}"}), flush=True)
        else:
            with open(args.inputs, encoding="utf-8") as f:
                inputs = json.load(f)
            init = None
            if args.init:
                with open(args.init, encoding="utf-8") as f:
                    init = json.load(f)
            # as `pf flow test` (standard mode) calls it: no streaming, generators read to the end
            # (PFClient.test's defaults stream an LLM node's reply into the outputs instead)
            outputs = pf.flows.test(flow=args.flow, inputs=inputs, init=init, allow_generator_output=False,
                                    stream_output=False)
            outputs = {k: plain(v) for k, v in as_outputs(plain(outputs)).items()}
            sys.stdout.flush()
            print(json.dumps(outputs, default=str))
    except SystemExit:
        raise
    except BaseException as e:
        print(f"ERROR {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


def fresh_file_locks():
    """filelock refuses a lock object made before a fork (promptflow makes its database's and
    keyring's at import): make each module-level one again, as a fresh import would."""
    from filelock import BaseFileLock
    for module in list(sys.modules.values()):
        names = getattr(module, "__dict__", {})
        for name, value in list(names.items()):
            if isinstance(value, BaseFileLock):
                names[name] = type(value)(value.lock_file, timeout=value.timeout)


def serve():
    """Import promptflow once, then run each `test` job read from stdin in a child forked from
    this process: a job costs its own run, not promptflow's import (about 3 s of CPU each).

    A job is a JSON line {"argv", "cwd", "out", "err"}; the answer is a line with the child's pid
    as it starts (the caller kills its process group on a timeout), then one with its exit status
    ({"rc": N}, or {"signal": N} when it was killed). Every job gets a fresh child of the same
    parent, so no job sees another's state, as with a fresh process per job."""
    setup_home()
    import promptflow.client  # noqa: F401  (the import every job shares)
    import promptflow.executor  # noqa: F401
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setsid()
                os.chdir(job["cwd"])
                stdin = os.open(os.devnull, os.O_RDONLY)
                out = os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                err = os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(stdin, 0)
                os.dup2(out, 1)
                os.dup2(err, 2)
                sys.argv = [sys.argv[0]] + job["argv"]
                fresh_file_locks()
                try:
                    main()
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    # the parent's atexit handlers and threads are not this child's to run
                    os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            print(json.dumps({"signal": os.WTERMSIG(status)}), flush=True)
        else:
            print(json.dumps({"rc": os.WEXITSTATUS(status)}), flush=True)


if __name__ == "__main__":
    main()
'''


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def short(value, limit=100):
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def diff(expected, actual, path="$"):
    if is_number(expected) and is_number(actual):
        if isinstance(expected, float) and isinstance(actual, float) and math.isnan(expected) and math.isnan(actual):
            return None
        if expected == actual or math.isclose(expected, actual, rel_tol=REL_TOL, abs_tol=1e-12):
            return None
        return f"at {path}: pf {short(expected)} flowrt {short(actual)}"
    if isinstance(expected, dict) and isinstance(actual, dict):
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        if missing or extra:
            return f"at {path}: keys only in pf {missing[:5]}, only in flowrt {extra[:5]}"
        for k in expected:
            d = diff(expected[k], actual[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"at {path}: pf {len(expected)} items, flowrt {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            d = diff(e, a, f"{path}[{i}]")
            if d:
                return d
        return None
    if type(expected) is type(actual) and expected == actual:
        return None
    return f"at {path}: pf {short(expected)} flowrt {short(actual)}"


UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def kind(value):
    """What stays of a value that is new in every run: its JSON type, and for a string its text with
    uuids, hex addresses and numbers blanked."""
    if isinstance(value, str):
        text = UUID_RE.sub("<UUID>", value)
        text = re.sub(r"0x[0-9a-fA-F]+", "<HEX>", text)
        return "str:" + re.sub(r"\d+", "<N>", text)
    if is_number(value):
        return "int" if isinstance(value, int) else "float"
    return type(value).__name__


def random_compare(runs, actual, path, random_paths):
    """None when `actual` equals promptflow's outputs wherever all of promptflow's `runs` agree, and has
    the same kind wherever they are all different from one another (a truly random value: `id(self)`,
    a uuid run id); else the first difference. Paths compared by kind are added to random_paths."""
    first = runs[0]
    if all(not diff(first, r) for r in runs[1:]):
        return diff(first, actual, path)
    if all(isinstance(r, dict) for r in runs) and isinstance(actual, dict) and \
            all(set(r) == set(first) for r in runs) and set(actual) == set(first):
        for k in first:
            d = random_compare([r[k] for r in runs], actual[k], f"{path}.{k}", random_paths)
            if d:
                return d
        return None
    if all(isinstance(r, list) for r in runs) and isinstance(actual, list) and \
            all(len(r) == len(first) for r in runs) and len(actual) == len(first):
        for i in range(len(first)):
            d = random_compare([r[i] for r in runs], actual[i], f"{path}[{i}]", random_paths)
            if d:
                return d
        return None
    texts = [json.dumps(r, sort_keys=True, default=str) for r in runs]
    kinds = {kind(r) for r in runs}
    if len(set(texts)) == len(texts) and len(kinds) == 1 and kind(actual) in kinds:
        random_paths.append(path)
        return None
    return f"at {path}: promptflow's own runs differ and flowrt's {short(actual)} is not one of them"


def tool_error(line):
    """(exception type, message) a flow's own code raised, from promptflow's error line
    (`... Execution failure in 'node': (ValueError) Random failure`) or flowrt's
    (`... node 'node' failed: ValueError: Random failure`); None for any other failure."""
    m = re.search(r"Execution failure in '[^']*': \((\w+)\) (.*)$", line or "")
    if m:
        return m.group(1), m.group(2).strip()
    m = re.search(r"node '[^']*' failed: (\w+): (.*)$", line or "")
    if m and m.group(1) not in ("ToolLoadError", "UnsupportedTool", "WorkerCrashed", "LlmError"):
        return m.group(1), m.group(2).strip()
    return None


def last_json_object(text):
    decoder = json.JSONDecoder()
    found, pos = None, 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            return found
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        if isinstance(value, dict):
            found = value
        pos = end


def run_command(argv, env, timeout, cwd=None):
    """(returncode, stdout, stderr, seconds); returncode None on timeout (process group killed)."""
    t0 = time.time()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        return 127, "", f"cannot start {argv[0]}: {e}", 0.0
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        out, err = proc.communicate()
        rc = None
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.time() - t0


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # it ended as the timer fired


class PfDrivers:
    """promptflow's driver kept running (`serve`), one per job slot: each `test` runs in a child it
    forks, so a flow costs its run and not promptflow's import. Same answers as
    [`run_command`]; with `fresh`, every job is a process of its own (as before)."""

    def __init__(self, pf_python, driver, env, slots, fresh, work):
        self.pf_python, self.driver, self.env, self.work = pf_python, driver, env, work
        self.fresh = fresh
        self.free = queue.Queue()
        self.procs = []
        self.count = 0
        self.lock = threading.Lock()
        for _ in range(0 if fresh else slots):
            self.free.put(self.start())

    def start(self):
        proc = subprocess.Popen([self.pf_python, self.driver, "serve"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=self.env, text=True, start_new_session=True)
        with self.lock:
            self.procs.append(proc)
        return proc

    def run(self, argv, timeout, cwd):
        if self.fresh:
            return run_command([self.pf_python, self.driver] + argv, self.env, timeout, cwd)
        with self.lock:
            self.count += 1
            stem = os.path.join(self.work, f"pf_job_{self.count}")
        proc = self.free.get()
        t0 = time.time()
        status = None
        try:
            proc.stdin.write(json.dumps({"argv": argv, "cwd": cwd, "out": stem + ".out", "err": stem + ".err"})
                             + "\n")
            proc.stdin.flush()
            started = proc.stdout.readline()
            if started:
                pid = json.loads(started)["pid"]
                # the status line, or a kill of the job's process group when it is late
                timer = threading.Timer(timeout, kill_group, (pid,))
                timer.start()
                try:
                    line = proc.stdout.readline()
                finally:
                    timer.cancel()
                status = json.loads(line) if line else None
        except (BrokenPipeError, ValueError):
            status = None
        if status is None:
            # The driver itself died (not the job's child): a new one takes its slot, and this
            # job runs in a process of its own, so no flow is lost to it.
            proc.kill()
            self.free.put(self.start())
            return run_command([self.pf_python, self.driver] + argv, self.env, timeout, cwd)
        self.free.put(proc)
        rc = None if status.get("signal") == signal.SIGKILL else status.get("rc", -status.get("signal", 0))
        texts = []
        for ext in (".out", ".err"):
            with open(stem + ext, "rb") as fh:
                texts.append(fh.read().decode("utf-8", "replace"))
        return rc, texts[0], texts[1], time.time() - t0

    def stop(self):
        for proc in self.procs:
            try:
                proc.stdin.close()
            except OSError:
                pass  # a driver that died
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


OUTPUT_FILE = re.compile(r"^(?P<pre>.*/\.promptflow/output/)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                         r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?P<ext>\.[A-Za-z0-9]+)?$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_error_line(out, err, prefer=("error", "Error", "ERROR", "Exception", "failed")):
    """A one-line reason from a failed command's output."""
    text = ANSI.sub("", err + "\n" + out)
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for i, l in enumerate(lines):
        if l.startswith("ERROR ") or l.startswith("error:") or l.startswith("Error:"):
            # flowrt prints `error: <what>` then `caused by: <why>` lines: the innermost cause says most
            causes = [c for c in lines[i + 1:i + 6] if c.startswith("caused by:")]
            if causes:
                return (l[:120] + " / " + causes[-1])[:300]
            return l[:240]
    for l in reversed(lines):
        if any(p in l for p in prefer) and not l.startswith("Traceback"):
            return l[:240]
    return (lines[-1] if lines else "(no output)")[:240]


class FakeServer:
    def __init__(self, script):
        self.proc = subprocess.Popen([sys.executable, script, "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (\d+)", line or "")
        if not m:
            self.stop()
            raise SystemExit(f"fake OpenAI server did not start: {line!r}")
        self.base = f"http://127.0.0.1:{m.group(1)}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class FakeManagedIdentity:
    """A managed identity endpoint as App Service gives one (IDENTITY_ENDPOINT, IDENTITY_HEADER):
    flows calling Azure OpenAI without a key sign in with Microsoft Entra ID in both runtimes, and
    the fake model server takes the bearer token as it takes a key."""

    def __init__(self):
        import http.server
        secret = "side-by-side"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                ok = self.headers.get("x-identity-header") == secret
                body = json.dumps({"access_token": "fake-entra-token", "token_type": "Bearer",
                                   "expires_on": str(int(time.time()) + 3600),
                                   "resource": "https://cognitiveservices.azure.com"} if ok
                                  else {"error": "bad_request"}).encode()
                self.send_response(200 if ok else 400)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.env = {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{self.server.server_port}/msi/token",
                    "IDENTITY_HEADER": secret}

    def stop(self):
        self.server.shutdown()


class RunningServer:
    """A model server someone else started (--openai-base)."""

    def __init__(self, base):
        self.base = base.rstrip("/")

    def stop(self):
        pass


def flow_sources(repo, folders):
    """[(folder on disk, its label in flow paths)]: promptflow's two roots of a checkout, then each
    --flows folder under its own name (made unique)."""
    sources = []
    if repo:
        for root in ROOTS:
            if os.path.isdir(os.path.join(repo, root)):
                sources.append((os.path.join(repo, root), root))
    labels = {label for _, label in sources}
    for folder in folders:
        folder = os.path.abspath(folder)
        if not os.path.isdir(folder):
            raise SystemExit(f"--flows {folder}: not a folder")
        label, n = os.path.basename(folder.rstrip(os.sep)) or "flows", 2
        while label in labels:
            label, n = f"{os.path.basename(folder)}-{n}", n + 1
        labels.add(label)
        sources.append((folder, label))
    return sources


def find_flows(sources, only):
    flows = []
    for top, label in sources:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in (".promptflow", "__pycache__", ".runs", ".git",
                                                                  "node_modules", ".venv"))
            rel_dir = os.path.normpath(os.path.join(label, os.path.relpath(dirpath, top)))
            if "flow.dag.yaml" in filenames:
                flows.append({"path": rel_dir, "format": "dag", "abs": dirpath})
            if "flow.flex.yaml" in filenames:
                flows.append({"path": rel_dir, "format": "flex", "abs": dirpath})
            for name in sorted(filenames):
                if name.endswith(".prompty"):
                    flows.append({"path": os.path.join(rel_dir, name), "format": "prompty",
                                  "abs": os.path.join(dirpath, name)})
    if only:
        flows = [f for f in flows if any(o in f["path"] for o in only)]
    return flows


def connection_yamls(base):
    docs = {}
    for n in OPENAI_NAMES + EXTRA_OPENAI_NAMES:
        docs[n] = f"name: {n}\ntype: open_ai\napi_key: fake-key\nbase_url: {base}/v1\n"
    for n in AZURE_NAMES + EXTRA_AZURE_NAMES:
        docs[n] = (f"name: {n}\ntype: azure_open_ai\napi_key: fake-key\napi_base: {base}\napi_type: azure\n"
                   f"api_version: \"2024-02-01\"\n")
    for n in CUSTOM_NAMES:
        docs[n] = (f"name: {n}\ntype: custom\nconfigs:\n  endpoint: {base}\n  api_base: {base}\n  key1: test1\n"
                   f"secrets:\n  api_key: fake-key\n  key: fake-key\n  key2: test2\n")
    return docs


# ----------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", help="a promptflow checkout (work tree): its test_configs and examples/flows")
    ap.add_argument("--flows", action="append", default=[], metavar="DIR",
                    help="a folder of flows, any layout (repeatable; with or instead of --repo)")
    ap.add_argument("--openai-base", help="an OpenAI-compatible server already running (instead of --fake-openai)")
    ap.add_argument("--openai-connection", action="append", default=[], metavar="NAME",
                    help="another open_ai connection name the flows use (repeatable)")
    ap.add_argument("--azure-connection", action="append", default=[], metavar="NAME",
                    help="another azure_open_ai connection name the flows use (repeatable)")
    ap.add_argument("--pf", default="/tmp/pfvenv/bin/pf", help="promptflow's pf; its sibling python runs the SDK driver")
    ap.add_argument("--pf-python", default=None, help="default: the python next to --pf")
    ap.add_argument("--flowrt", default="flowrt")
    ap.add_argument("--flowrt-python", default=None,
                    help="an interpreter flowrt runs flows without requirements.txt on as it is (FLOWRT_PYTHON); "
                         "default: flowrt's base environment (python3 on PATH with the base's packages)")
    ap.add_argument("--fake-openai", required=False, help="required unless --openai-base or --report")
    ap.add_argument("--only", action="append", default=[], help="substring of the flow path (repeatable)")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="results.json")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--pf-fresh", action="store_true",
                    help="run promptflow in a fresh process per flow (default: children forked from a driver that "
                         "imported promptflow once, ~3 s of CPU less per flow)")
    ap.add_argument("--no-synthesize", action="store_true",
                    help="skip a flow (\"no inputs\") instead of passing a placeholder, by declared type, for each "
                         "input or init kwarg that has no value from defaults/samples/data lines")
    ap.add_argument("--report", metavar="RESULTS_JSON", help="print the table of a saved results file and exit")
    args = ap.parse_args()
    if args.report:
        with open(args.report, encoding="utf-8") as fh:
            saved = json.load(fh)
        report(saved["results"], saved["total"])
        return

    if not args.repo and not args.flows:
        ap.error("give --repo (a promptflow checkout) or --flows DIR")
    if not args.fake_openai and not args.openai_base:
        ap.error("give --fake-openai SCRIPT or --openai-base URL")
    EXTRA_OPENAI_NAMES.extend(args.openai_connection)
    EXTRA_AZURE_NAMES.extend(args.azure_connection)
    repo = os.path.abspath(args.repo) if args.repo else None
    sources = flow_sources(repo, args.flows)
    pf_python = args.pf_python or os.path.join(os.path.dirname(os.path.abspath(args.pf)), "python")
    flowrt = os.path.abspath(args.flowrt) if os.path.sep in args.flowrt else args.flowrt
    work = tempfile.mkdtemp(prefix="side_by_side.")
    print(f"work folder {work}", file=sys.stderr)
    driver = os.path.join(work, "pf_driver.py")
    with open(driver, "w") as f:
        f.write(PF_DRIVER)

    # two private copies of the flow tree
    trees = {}
    for who in ("pf", "flowrt"):
        trees[who] = os.path.join(work, "tree_" + who)
        for src, label in sources:
            shutil.copytree(src, os.path.join(trees[who], label), symlinks=True,
                            ignore=shutil.ignore_patterns(".git", "node_modules", ".venv", "__pycache__"))

    flows = find_flows(sources, args.only)
    flows_file = os.path.join(work, "flows.json")
    with open(flows_file, "w") as fh:
        json.dump(flows, fh)

    server = RunningServer(args.openai_base) if args.openai_base else FakeServer(args.fake_openai)
    identity = FakeManagedIdentity()
    base = server.base
    pf_home = os.path.join(work, "pf_home")
    flowrt_home = os.path.join(work, "flowrt_home")
    os.makedirs(pf_home)
    os.makedirs(flowrt_home)
    common = dict(os.environ)
    for k in list(common):
        if k.startswith(("OPENAI_", "AZURE_OPENAI_", "PF_", "FLOWRT_")):
            del common[k]
    common.update({
        "FAKE_OPENAI_BASE": base,
        "OPENAI_API_KEY": "fake-key", "OPENAI_BASE_URL": base + "/v1",
        "AZURE_OPENAI_API_KEY": "fake-key", "AZURE_OPENAI_ENDPOINT": base, "AZURE_OPENAI_API_BASE": base,
        "AZURE_OPENAI_API_TYPE": "azure", "OPENAI_API_VERSION": "2024-02-01", "OPENAI_API_BASE": base + "/v1",
        "AZURE_OPENAI_API_VERSION": "2024-02-01", "AZURE_OPENAI_DEPLOYMENT": "gpt-35-turbo",
        "PYTHONUNBUFFERED": "1",
        # keyless Azure OpenAI: a managed identity (the Azure SDKs ask it before the Azure CLI)
        **identity.env,
        # test_configs/prompty/prompty_with_env.prompty reads its whole configuration from these
        "MOCK_AZURE_DEVELOPMENT": "gpt-35-turbo", "MOCK_AZURE_API_KEY": "fake-key",
        "MOCK_AZURE_API_VERSION": "2024-02-01", "MOCK_AZURE_ENDPOINT": base,
    })
    pf_env = dict(common, SBS_HOME=pf_home, HOME=pf_home, PF_HOME_DIRECTORY=os.path.join(pf_home, ".promptflow"),
                  PF_BATCH_METHOD="spawn", PF_DISABLE_TRACING="true")
    # flowrt's home is private to this run, but the machine's cache is not: flowrt keeps the base
    # environment it builds once per machine there (under HOME's .cache by default), as on a user's
    # machine; a private HOME alone would rebuild it (tens of seconds) in every run
    machine_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    fr_env = dict(common, FLOWRT_HOME=flowrt_home, HOME=flowrt_home, XDG_CACHE_HOME=machine_cache)
    if args.flowrt_python:
        fr_env["FLOWRT_PYTHON"] = os.path.abspath(args.flowrt_python)
    pf_env["SBS_OPENAI_NAMES"] = json.dumps(OPENAI_NAMES)
    pf_env["SBS_AZURE_NAMES"] = json.dumps(AZURE_NAMES)
    if args.no_synthesize:
        pf_env["SBS_NO_SYNTHESIZE"] = "1"

    def normalize(value, who):
        """The two runtimes run private copies of the tree: the copy's path is not a difference. A file a
        flow wrote under .promptflow/output/ is named by a random uuid: compared by the path with that stem
        replaced by <UUID> (the folder and the extension still count) and by a digest of its bytes."""
        if isinstance(value, str):
            m = OUTPUT_FILE.match(value)
            if m and value.startswith(trees[who]):
                try:
                    with open(value, "rb") as fh:
                        digest = "sha256:" + hashlib.sha256(fh.read()).hexdigest()[:16]
                except OSError:
                    digest = "missing"
                value = f"{m.group('pre')}<UUID>{m.group('ext') or ''} [{digest}]"
            return value.replace(trees[who], "<TREE>")
        if isinstance(value, list):
            return [normalize(v, who) for v in value]
        if isinstance(value, dict):
            return {normalize(k, who): normalize(v, who) for k, v in value.items()}
        return value

    try:
        rc, out, err, _ = run_command([pf_python, driver, "plan", "--flows", flows_file], pf_env, 300)
        if rc != 0:
            raise SystemExit(f"planning failed: {err[-2000:]}")
        plan = json.loads(out.strip().splitlines()[-1])

        # connections
        conn_dir = os.path.join(work, "connections")
        os.makedirs(conn_dir)
        conn_problems = []
        conn_files = {}
        for name, text in connection_yamls(base).items():
            p = os.path.join(conn_dir, name + ".yaml")
            with open(p, "w") as fh:
                fh.write(text)
            conn_files[p] = name
            rc, out, err, _ = run_command([flowrt, "connection", "create", "--file", p], fr_env, 60)
            if rc != 0:
                conn_problems.append(f"flowrt {name}: {first_error_line(out, err)}")
        # promptflow's import takes seconds: every connection in one process of its own
        argv = [pf_python, driver, "connection"]
        for p in conn_files:
            argv += ["--file", p]
        rc, out, err, _ = run_command(argv, pf_env, 300)
        created = set()
        for line in (out or "").splitlines():
            try:
                done = json.loads(line)
            except ValueError:
                continue
            if isinstance(done, dict) and done.get("file") in conn_files:
                if "error" in done:
                    conn_problems.append(f"pf {conn_files[done['file']]}: {done['error']}")
                else:
                    created.add(done["file"])
        for p, name in conn_files.items():
            if p not in created and not any(c.startswith(f"pf {name}:") for c in conn_problems):
                conn_problems.append(f"pf {name}: {first_error_line(out or '', err or '')}")
        for line in conn_problems:
            print("connection: " + line, file=sys.stderr)

        results = []
        lock = threading.Lock()
        inputs_dir = os.path.join(work, "inputs")
        os.makedirs(inputs_dir)
        # prompty and flex first (few), then dag; partial results then cover all formats
        order = {"prompty": 0, "flex": 1, "dag": 2}
        plan.sort(key=lambda f: (order[f["format"]], f["path"]))
        total = len(plan)

        def save():
            with open(args.out, "w") as fh:
                json.dump({"finished": len(results) == total, "total": total, "fake_openai": base,
                           "connection_problems": conn_problems,
                           "results": sorted(results, key=lambda r: (r["format"], r["path"]))},
                          fh, indent=1, ensure_ascii=False, default=str)

        def one(index, item):
            res = {"path": item["path"], "format": item["format"]}
            if "skip" in item:
                res.update(status="skipped", reason=item["skip"])
                return res
            res["inputs"] = item["inputs"]
            res["inputs_source"] = item.get("source")
            for key in ("synthesized", "init_synthesized"):
                if item.get(key):
                    res[key] = item[key]
            stem = os.path.join(inputs_dir, str(index))
            with open(stem + ".inputs.json", "w") as fh:
                json.dump(item["inputs"], fh, ensure_ascii=False)
            init_args_pf, init_args_fr = [], []
            if item.get("init") is not None:
                res["init"] = item["init"]
                with open(stem + ".init.json", "w") as fh:
                    json.dump(item["init"], fh, ensure_ascii=False)
                init_args_pf = ["--init", stem + ".init.json"]
                init_args_fr = ["--init", stem + ".init.json"]
            pf_flow = os.path.join(trees["pf"], item["path"])
            fr_flow = os.path.join(trees["flowrt"], item["path"])
            cwd_pf = pf_flow if item["format"] != "prompty" else os.path.dirname(pf_flow)
            cwd_fr = fr_flow if item["format"] != "prompty" else os.path.dirname(fr_flow)
            rc, out, err, secs = pf_drivers.run(["test", "--flow", pf_flow, "--inputs", stem + ".inputs.json"]
                                                 + init_args_pf, args.timeout, cwd_pf)
            res["pf_rc"], res["pf_seconds"] = rc, round(secs, 2)
            pf_out = normalize(last_json_object(out), "pf") if rc == 0 else None
            if rc != 0 or pf_out is None:
                res.update(status="pf_failed",
                           reason=("timeout" if rc is None else first_error_line(out, err)))
                return res
            res["pf_outputs"] = pf_out
            # --json: every result as an object (a prompty's or flex entry's plain value as {"output": v}),
            # the shape the driver gives promptflow's result
            rc, out, err, secs = run_command([flowrt, "flow", "test", fr_flow, "--inputs-file",
                                              stem + ".inputs.json", "--json"] + init_args_fr, fr_env, args.timeout,
                                             cwd_fr)
            res["flowrt_rc"], res["flowrt_seconds"] = rc, round(secs, 2)
            fr_out = normalize(last_json_object(out), "flowrt") if rc == 0 else None
            if rc != 0 or fr_out is None:
                reason = "timeout" if rc is None else (first_error_line(out, err) if rc != 0
                                                       else "no JSON object printed")
                res.update(status="flowrt_failed", reason=reason, flowrt_stderr_tail=ANSI.sub("", err)[-1500:])
                # a flow that fails at random (its own code raises): flowrt's failure is one of promptflow's
                # outcomes when a rerun of promptflow fails with the same exception type and message
                fr_error = tool_error(reason)
                if rc is not None and fr_error:
                    for n in range(PF_RERUNS):
                        rc2, out2, err2, _ = pf_drivers.run(["test", "--flow", pf_flow, "--inputs",
                                                             stem + ".inputs.json"] + init_args_pf,
                                                            args.timeout, cwd_pf)
                        if rc2 not in (0, None) and tool_error(first_error_line(out2, err2)) == fr_error:
                            res.update(status="identical", identical_to_pf_run=n + 2, flowrt_failed_as=reason,
                                       reason=None,
                                       pf_nondeterministic=f"promptflow's run {n + 2} failed the same way: "
                                                           + first_error_line(out2, err2)[:200])
                            break
                return res
            res["flowrt_outputs"] = fr_out
            d = diff(pf_out, fr_out)
            if not d:
                res["status"] = "identical"
                return res
            res.update(status="different", reason=d)
            # is promptflow itself deterministic here? run it again (up to PF_RERUNS times): when one of its
            # own runs gives exactly flowrt's outputs (a flow that picks at random), flowrt is identical to
            # that run; when promptflow's runs differ but none is flowrt's, the outputs that are the same in
            # all of promptflow's runs decide "matching"
            again = []
            for n in range(PF_RERUNS):
                rc, out, err, secs = pf_drivers.run(["test", "--flow", pf_flow, "--inputs", stem + ".inputs.json"]
                                                     + init_args_pf, args.timeout, cwd_pf)
                value = normalize(last_json_object(out), "pf") if rc == 0 else None
                if value is None:
                    continue
                again.append(value)
                if not diff(value, fr_out):
                    res.update(status="identical", identical_to_pf_run=n + 2,
                               pf_nondeterministic=diff(pf_out, value).replace(" flowrt ", f" pf(run {n + 2}) "),
                               reason=None, different_from_first_pf_run=d)
                    res["pf_outputs_matching_run"] = value
                    return res
            varying = next((v for v in again if diff(pf_out, v)), None)
            random_paths = []
            if varying is not None and len(again) == PF_RERUNS and \
                    random_compare([pf_out] + again, fr_out, "$", random_paths) is None and random_paths:
                # every difference is in a value promptflow never repeats (id(self), a fresh run id):
                # flowrt's has the same kind, and everything else is identical
                res.update(status="identical", random_compared_by_kind=random_paths, different_from_first_pf_run=d,
                           reason=None,
                           pf_nondeterministic=diff(pf_out, varying).replace(" flowrt ", " pf(another run) "))
                return res
            if varying is not None:
                res["pf_nondeterministic"] = diff(pf_out, varying).replace(" flowrt ", " pf(another run) ")
                stable = {k: v for k, v in pf_out.items()
                          if all(k in o and not diff(v, o[k]) for o in again)}
                fr_stable = {k: v for k, v in fr_out.items() if k in stable}
                d2 = diff(stable, fr_stable) if set(fr_out) == set(pf_out) else d
                res["stable_match"] = not d2
                res["reason"] = (f"promptflow itself differs between its {len(again) + 1} runs ("
                                 + res["pf_nondeterministic"] + "); "
                                 + ("the outputs that are stable match" if not d2 else "also " + d2))
            return res

        def task(index, item):
            try:
                res = one(index, item)
            except Exception as e:  # a bug here must not lose the run
                res = {"path": item["path"], "format": item["format"], "status": "error",
                       "reason": f"side_by_side: {type(e).__name__}: {e}"}
            with lock:
                results.append(res)
                print(f"[{len(results)}/{total}] {res['status']:13} {res['format']:7} {res['path']}"
                      + (f"  -- {res.get('reason')}" if res.get("reason") else ""), file=sys.stderr, flush=True)
                save()

        pf_drivers = PfDrivers(pf_python, driver, pf_env, max(1, args.jobs), args.pf_fresh, work)
        try:
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                for i, item in enumerate(plan):
                    pool.submit(task, i, item)
        finally:
            pf_drivers.stop()
        save()
        report(results, total)
    finally:
        server.stop()
        identity.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(results, total):
    print()
    print(f"{len(results)} of {total} flows finished")
    # "matching": identical, or promptflow's own two runs differ (random choices, generated file
    # names) and every output that is the same in both of them matches flowrt's.
    print(f"{'format':8} {'found':>6} {'skipped':>8} {'pf-failed':>10} {'runs-under-pf':>14} {'identical':>10} {'%':>7}"
          f" {'matching':>9} {'%':>7}")
    for fmt in ("dag", "prompty", "flex"):
        rs = [r for r in results if r["format"] == fmt]
        n_skip = sum(r["status"] == "skipped" for r in rs)
        n_pff = sum(r["status"] in ("pf_failed", "error") for r in rs)
        runs = [r for r in rs if r["status"] in ("identical", "different", "flowrt_failed")]
        ident = sum(r["status"] == "identical" for r in runs)
        matching = ident + sum(bool(r["status"] == "different" and r.get("stable_match")) for r in runs)
        pct = f"{100.0 * ident / len(runs):.1f}" if runs else "-"
        mpct = f"{100.0 * matching / len(runs):.1f}" if runs else "-"
        print(f"{fmt:8} {len(rs):6} {n_skip:8} {n_pff:10} {len(runs):14} {ident:10} {pct:>7} {matching:9} {mpct:>7}")
    special = [r for r in results if r["status"] == "identical"
               and (r.get("identical_to_pf_run") or r.get("random_compared_by_kind"))]
    if special:
        print(f"\nidentical only allowing for promptflow's own randomness ({len(special)})")
        for r in sorted(special, key=lambda r: (r["format"], r["path"])):
            if r.get("flowrt_failed_as"):
                why = f"flowrt failed ({r['flowrt_failed_as']}); {r.get('pf_nondeterministic')}"
            elif r.get("identical_to_pf_run"):
                why = (f"equal to promptflow's run {r['identical_to_pf_run']} (its runs differ: "
                       f"{r.get('pf_nondeterministic')})")
            else:
                why = ("values new in each of promptflow's runs compared by kind: "
                       + ", ".join(r["random_compared_by_kind"]))
            print(f"  {r['format']:7} {r['path']}: {why}"[:400])
    for fmt in ("dag", "prompty", "flex"):
        bad = [r for r in results if r["format"] == fmt and r["status"] in ("different", "flowrt_failed")]
        if bad:
            print(f"\n{fmt}: not identical ({len(bad)})")
            for r in sorted(bad, key=lambda r: r["path"]):
                print(f"  {r['status']:13} {r['path']}: {r['reason']}")


if __name__ == "__main__":
    main()
