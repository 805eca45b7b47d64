//! Flex flows (`flow.flex.yaml`) as users see them: `flow test`, `run create`, `flow validate`
//! and `flow serve` on the real binary with real Python workers.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::flow_serve::FlowServe;
use common::{flow, Env, FakeOpenAi};
use serde_json::{json, Value};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_json(dir: &Path, name: &str, v: Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A flex flow folder written on the fly.
fn flex_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn function_entry_typed_by_the_yaml() {
    let env = Env::new();
    let (_t, dir) = flow("flex_fn");
    // "2.5" → 2.5 (double), "true" → True, the YAML default zone B beats the code's A, and
    // environment_variables reach os.environ as str().
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "weight=2.5",
        "express=true",
        "extra=ignored",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json(),
        json!({"total": 10.0, "weight_type": "float", "zone": "B", "currency": "EUR", "factor": "2"})
    );
    assert!(r.stderr.contains("pricing 2.5 in B"), "{}", r.stderr);
    // The flow file itself works too; an int becomes a float for a double input.
    let inputs = write_json(
        dir.parent().unwrap(),
        "in.json",
        json!({"weight": 3, "zone": "A"}),
    );
    let r = env.run(&[
        "flow",
        "test",
        s(&dir.join("flow.flex.yaml")),
        "--inputs-file",
        &inputs,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["total"], json!(3.0));
    assert_eq!(r.json()["weight_type"], json!("float"));
}

#[test]
fn a_flex_flow_written_as_flow_dag_yaml_runs_as_flex() {
    // promptflow's older spelling: a flow.dag.yaml holding `entry:` and no nodes is a flex flow.
    let env = Env::new();
    let dir = flex_dir(&[
        ("flow.dag.yaml", "entry: echo:my_flow"),
        (
            "echo.py",
            "def my_flow(text: str = 'hi'):\n    print(f'got {text}')\n    return {'said': text}\n",
        ),
    ]);
    let r = env.run(&["flow", "test", s(dir.path()), "--inputs", "text=hello"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"said": "hello"}));
}

#[test]
fn function_entry_errors() {
    let env = Env::new();
    let (_t, dir) = flow("flex_fn");
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "weight=-1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "Execution failure in 'price': (ValueError) weight must be positive, got -1.0"
        ),
        "{}",
        r.stderr
    );
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "weight=1", "zone=Z"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("(KeyError)") && r.stderr.contains("no zone Z"),
        "{}",
        r.stderr
    );
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "weight=heavy"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("input 'weight'"), "{}", r.stderr);
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "express=true"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("missing required input 'weight'"),
        "{}",
        r.stderr
    );
    // --init is for class entries.
    let init = write_json(dir.parent().unwrap(), "init.json", json!({"x": 1}));
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "weight=1",
        "--init",
        &init,
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is a function"), "{}", r.stderr);
}

#[test]
fn class_entry_init_sample_and_dataclass_output() {
    let env = Env::new();
    let (_t, dir) = flow("flex_cls");
    let tmp = dir.parent().unwrap();
    // The YAML default times=1 beats the code default 3.
    let init = write_json(tmp, "init.json", json!({"prefix": "P"}));
    let args = [
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "word=hi",
        "--init",
        &init,
    ];
    let r = env.run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A dataclass result prints as Python writes it, as `pf flow test` prints it; --json gives
    // its fields.
    assert_eq!(r.stdout.trim_end(), "Label(text='P:hi', length=4)");
    assert_eq!(
        env.run(&[&args[..], &["--json"]].concat()).json(),
        json!({"text": "P:hi", "length": 4})
    );
    // No init: sample.init (from sample.json); no inputs: sample.inputs.
    let r = env.run(&["flow", "test", s(&dir), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"text": "S:sample-S:sample", "length": 17}));
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "word=x", "--json"]);
    assert_eq!(r.json(), json!({"text": "S:x-S:x", "length": 7}));
    // Init values are not converted: "2" stays a string, and str * str fails in the entry.
    let init = write_json(tmp, "init2.json", json!({"prefix": "P", "times": "2"}));
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "word=hi",
        "--init",
        &init,
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("can't multiply sequence"), "{}", r.stderr);
    // A missing constructor argument is an initialization error naming it.
    let init = write_json(tmp, "init3.json", json!({"times": 2}));
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "word=hi",
        "--init",
        &init,
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Failed to initialize flow entry with") && r.stderr.contains("prefix"),
        "{}",
        r.stderr
    );
}

#[test]
fn class_entry_batch_aggregates_successful_lines() {
    let env = Env::new();
    let (_t, dir) = flow("flex_cls");
    let tmp = dir.parent().unwrap();
    let data = tmp.join("data.jsonl");
    std::fs::write(
        &data,
        "{\"w\": \"a\"}\n{\"w\": \"boom\"}\n{\"w\": \"ccc\"}\n",
    )
    .unwrap();
    let init = write_json(tmp, "init.json", json!({"prefix": "B", "times": 2}));
    let out = tmp.join("out");
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--column-mapping",
        "word=${data.w}",
        "--init",
        &init,
        "--name",
        "labels1",
        "--output-dir",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        read_jsonl(&out.join("flow_outputs/output.jsonl")),
        vec![
            json!({"line_number": 0, "text": "B:a-B:a", "length": 7}),
            json!({"line_number": 2, "text": "B:ccc-B:ccc", "length": 11}),
        ]
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics,
        json!({"count": 2, "longest": 11, "texts": ["B:a-B:a", "B:ccc-B:ccc"]})
    );
    // Resuming re-runs the failed line with the same init.
    std::fs::write(&data, "{\"w\": \"a\"}\n{\"w\": \"dd\"}\n{\"w\": \"ccc\"}\n").unwrap();
    let r = env.run(&[
        "run",
        "create",
        "--resume-from",
        "labels1",
        "--data",
        s(&data),
        "--name",
        "labels2",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = read_jsonl(
        &env.home
            .path()
            .join("runs/labels2/flow_outputs/output.jsonl"),
    );
    assert_eq!(
        rows[1],
        json!({"line_number": 1, "text": "B:dd-B:dd", "length": 9})
    );
}

#[test]
fn async_entry_typed_by_annotations() {
    let env = Env::new();
    let (_t, dir) = flow("flex_async");
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "values=[1, 2, 3]",
        "offset=1",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"doubled": [4, 6, 8], "total": 18}));
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "values=[]"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("values must not be empty"),
        "{}",
        r.stderr
    );
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "values=[1]",
        "offset=x",
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("input 'offset'"), "{}", r.stderr);
}

#[test]
fn generator_entry_is_joined() {
    let env = Env::new();
    let (_t, dir) = flow("flex_gen");
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "word=abc"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // `pf flow test` prints a plain result bare.
    assert_eq!(r.stdout.trim_end(), "A.B.C");
}

/// Issue 21: a flex entry's result that is not a dict is printed by `flow test` as `pf flow
/// test` prints it (Python's `print(result)`), answered by `/score` as the value itself, and
/// written to a run's outputs under `output`; a dict is printed as `json.dumps(indent=4)`, even
/// one whose only key is `output`. (Expected texts taken from promptflow 1.18.5.)
#[test]
fn results_that_are_not_dicts_show_as_promptflow_shows_them() {
    let env = Env::new();
    let dir = flex_dir(&[(
        "entry.py",
        "def as_str(x: str = 'hi'):\n    return 'got ' + x\n\n\
         def as_int(x: str = 'hi'):\n    return len(x)\n\n\
         def as_float(x: str = 'hi'):\n    return len(x) / 4\n\n\
         def as_list(x: str = 'hi'):\n    return [x, x.upper(), 1, None, {'k': \"it's\"}]\n\n\
         def as_none(x: str = 'hi'):\n    return None\n\n\
         def as_bool(x: str = 'hi'):\n    return True\n\n\
         def as_output_dict(x: str = 'hi'):\n    return {'output': len(x)}\n",
    )]);
    let cases = [
        ("as_str", "got abc"),
        ("as_int", "3"),
        ("as_float", "0.75"),
        ("as_list", "['abc', 'ABC', 1, None, {'k': \"it's\"}]"),
        ("as_none", "None"),
        ("as_bool", "True"),
        ("as_output_dict", "{\n    \"output\": 3\n}"),
    ];
    for (entry, printed) in cases {
        std::fs::write(
            dir.path().join("flow.flex.yaml"),
            format!("entry: entry:{entry}\n"),
        )
        .unwrap();
        let r = env.run(&["flow", "test", s(dir.path()), "--inputs", "x=abc"]);
        assert_eq!(r.code, 0, "{entry}: {}", r.stderr);
        assert_eq!(r.stdout.trim_end(), printed, "{entry}");
    }
    // For scripts, --json prints one JSON object whatever the result.
    std::fs::write(dir.path().join("flow.flex.yaml"), "entry: entry:as_list\n").unwrap();
    let r = env.run(&["flow", "test", s(dir.path()), "--inputs", "x=abc", "--json"]);
    assert_eq!(
        r.json(),
        json!({"output": ["abc", "ABC", 1, null, {"k": "it's"}]})
    );
    // A run's outputs keep promptflow's shape: the value under `output`.
    std::fs::write(dir.path().join("flow.flex.yaml"), "entry: entry:as_str\n").unwrap();
    let data = write_json(dir.path(), "data.jsonl", json!({"x": "abc"}));
    let out = dir.path().join("out");
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(dir.path()),
        "--data",
        &data,
        "--column-mapping",
        "x=${data.x}",
        "--name",
        "bare",
        "--output-dir",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        read_jsonl(&out.join("flow_outputs/output.jsonl")),
        vec![json!({"line_number": 0, "output": "got abc"})]
    );
}

#[test]
fn streams_inside_a_dict_or_dataclass_output_are_joined() {
    let env = Env::new();
    let dir = flex_dir(&[
        ("flow.flex.yaml", "entry: streams:run\n"),
        (
            "streams.py",
            "from dataclasses import dataclass\nfrom typing import Any\n\n@dataclass\nclass Out:\n    text: Any\n    n: int\n\ndef run(kind: str):\n    if kind == 'dict':\n        return {'digits': (str(i) for i in range(4)), 'n': 4}\n    return Out(text=(c for c in 'abc'), n=3)\n",
        ),
    ]);
    let r = env.run(&["flow", "test", s(dir.path()), "--inputs", "kind=dict"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"digits": "0123", "n": 4}));
    let r = env.run(&["flow", "test", s(dir.path()), "--inputs", "kind=dataclass"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"text": "abc", "n": 3}));
}

#[test]
fn an_empty_string_default_in_the_yaml_is_no_default() {
    // promptflow reads `default: ""` as none given: the code's default (here None) applies.
    let env = Env::new();
    let dir = flex_dir(&[
        (
            "flow.flex.yaml",
            "entry: probe:Probe\ninputs:\n  a:\n    type: string\n  b:\n    type: string\n    default: \"\"\ninit:\n  c:\n    type: string\n    default: \"\"\n",
        ),
        (
            "probe.py",
            "class Probe:\n    def __init__(self, c: str = None):\n        self.c = c\n\n    def __call__(self, a: str, b: str = None):\n        return {'a': a, 'b': b, 'c': self.c}\n",
        ),
    ]);
    let r = env.run(&["flow", "test", s(dir.path()), "--inputs", "a=x"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"a": "x", "b": null, "c": null}));
}

#[test]
fn model_configuration_connections_and_the_prompty_callback() {
    let server = FakeOpenAi::start(0);
    let env = Env::new();
    env.connection(&format!(
        "name: conn\ntype: open_ai\napi_key: k\nbase_url: {}/v1\n",
        server.base
    ));
    let (_t, dir) = flow("flex_model");
    let tmp = dir.parent().unwrap();
    let init = write_json(
        tmp,
        "i.json",
        json!({"config": {"connection": "conn", "model": "m1"}}),
    );
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "question=q",
        "--init",
        &init,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // As promptflow builds a flex entry: a configuration naming a connection reaches the entry with
    // the connection's base_url and key instead, and no connection name.
    assert_eq!(
        r.stdout.trim_end(),
        format!("OpenAIModelConfiguration:None:m1:{}/v1:k:q", server.base)
    );
    // An unknown connection fails the constructor, through the host callback.
    let bad = write_json(
        tmp,
        "b.json",
        json!({"config": {"connection": "nope", "model": "m"}}),
    );
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "question=q",
        "--init",
        &bad,
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Failed to initialize flow entry")
            && r.stderr.contains("Connection 'nope' is not found"),
        "{}",
        r.stderr
    );
    // Prompty.__call__ runs in the host: the configuration object's model is the one called.
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "question=q",
        "use_prompty=true",
        "--init",
        &init,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim_end(), "echo: q");
    let requests = server.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1["model"], "m1");
}

#[test]
fn compat_an_azure_model_configuration_is_resolved_from_its_connection_at_init() {
    // promptflow resolves a model configuration that names a connection before it builds the entry:
    // the entry sees the connection's api_base, api_version and key, and `connection` is None; an
    // Azure configuration naming an OpenAI connection fails the constructor as promptflow's does.
    let env = Env::new();
    env.connection("name: az\ntype: azure_open_ai\napi_key: az-key\napi_base: http://az.example\napi_version: \"2024-05-01\"\n");
    env.connection("name: oa\ntype: open_ai\napi_key: k\n");
    let dir = flex_dir(&[
        ("flow.flex.yaml", "entry: cfg:Show\n"),
        (
            "cfg.py",
            "from promptflow.core import AzureOpenAIModelConfiguration\n\n\nclass Show:\n    def __init__(self, config: AzureOpenAIModelConfiguration):\n        self.c = config\n\n    def __call__(self):\n        c = self.c\n        return {'deployment': c.azure_deployment, 'endpoint': c.azure_endpoint, 'version': c.api_version, 'key': c.api_key, 'connection': c.connection}\n",
        ),
    ]);
    let init = write_json(
        dir.path(),
        "i.json",
        json!({"config": {"connection": "az", "azure_deployment": "gpt"}}),
    );
    let r = env.run(&["flow", "test", s(dir.path()), "--init", &init]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json(),
        json!({"deployment": "gpt", "endpoint": "http://az.example", "version": "2024-05-01", "key": "az-key", "connection": null})
    );
    let init = write_json(
        dir.path(),
        "wrong.json",
        json!({"config": {"connection": "oa", "azure_deployment": "gpt"}}),
    );
    let r = env.run(&["flow", "test", s(dir.path()), "--init", &init]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("Failed to initialize flow entry")
            && r.stderr
                .contains("'OpenAIConnection' object has no attribute 'api_base'"),
        "{}",
        r.stderr
    );
}

const ASK_PROMPTY: &str = "---
name: Ask
model:
  api: chat
  configuration:
    type: openai
    connection: from_the_file
    model: file-model
  parameters:
    max_tokens: 10
inputs:
  question:
    type: string
  tone:
    type: string
    default: plain
---
system:
Answer in a {{tone}} tone.

user:
{{ question }}
";

const ASK_PY: &str = r#"from pathlib import Path

from promptflow.core import OpenAIModelConfiguration, Prompty

HERE = Path(__file__).parent


def ask(question: str, base: str, connection: str = "oai"):
    # A configuration object replaces the file's configuration whole: its inline endpoint is not
    # mixed with the file's `connection:` (which would be refused).
    config = OpenAIModelConfiguration(model="gpt-object", base_url=base + "/v1", api_key="sk-inline")
    first = Prompty.load(source=HERE / "ask.prompty", model={"configuration": config})(question=question)
    # A dict merges key by key: the file's type and max_tokens stay.
    raw = Prompty.load(
        source=HERE / "ask.prompty",
        model={
            "configuration": {"connection": connection, "model": "gpt-dict"},
            "parameters": {"temperature": 0},
            "response": "all",
        },
    )(question=question, tone="warm")
    return {
        "first": first,
        "content": raw.choices[0].message.content,
        "prompt_tokens": raw.usage.prompt_tokens,
        "finish": raw.choices[0].finish_reason,
    }
"#;

#[test]
fn a_flex_entry_runs_a_prompty_through_the_host() {
    let server = FakeOpenAi::start(0);
    let env = Env::new();
    env.connection(&format!(
        "name: oai\ntype: open_ai\napi_key: sk-stored\nbase_url: {}/v1\n",
        server.base
    ));
    let dir = flex_dir(&[
        ("flow.flex.yaml", "entry: ask:ask\n"),
        ("ask.py", ASK_PY),
        ("ask.prompty", ASK_PROMPTY),
    ]);
    let base = format!("base={}", server.base);
    let r = env.run(&[
        "flow",
        "test",
        s(dir.path()),
        "--inputs",
        "question=Late checkout?",
        &base,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json(),
        json!({
            "first": "echo: Late checkout?",
            "content": "echo: Late checkout?",
            "prompt_tokens": 5,
            "finish": "stop",
        })
    );
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let (path, first) = &requests[0];
    assert!(path.ends_with("/v1/chat/completions"), "{path}");
    assert_eq!(first["model"], "gpt-object");
    assert_eq!(first["max_tokens"], 10);
    assert_eq!(
        first["messages"],
        json!([
            {"role": "system", "content": "Answer in a plain tone."},
            {"role": "user", "content": "Late checkout?"},
        ])
    );
    let second = &requests[1].1;
    assert_eq!(second["model"], "gpt-dict");
    assert_eq!(second["max_tokens"], 10);
    assert_eq!(second["temperature"], 0);
    assert_eq!(second["messages"][0]["content"], "Answer in a warm tone.");
    drop(requests);

    // A connection the override names that does not exist fails the line, naming it.
    let r = env.run(&[
        "flow",
        "test",
        s(dir.path()),
        "--inputs",
        "question=q",
        &base,
        "connection=no_such_conn",
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains("ConnectionNotFound") && r.stderr.contains("no_such_conn"),
        "{}",
        r.stderr
    );
}

#[test]
fn entry_problems_are_reported_before_running() {
    let env = Env::new();
    let missing = flex_dir(&[
        ("flow.flex.yaml", "entry: not_here:main\n"),
        (
            "helpers.py",
            "def main(text: str) -> str:\n    return text\n",
        ),
    ]);
    let r = env.run(&["flow", "test", s(missing.path()), "--inputs", "text=hi"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("Failed to load python module 'not_here'"),
        "{}",
        r.stderr
    );
    let r = env.run(&["flow", "validate", s(missing.path())]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not_here"), "{}", r.stderr);

    let dict_return = flex_dir(&[
        ("flow.flex.yaml", "entry: m:f\n"),
        ("m.py", "def f(x: int) -> dict:\n    return {'x': x}\n"),
    ]);
    let r = env.run(&["flow", "test", s(dict_return.path()), "--inputs", "x=1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("return annotation 'dict'"),
        "{}",
        r.stderr
    );

    let mismatch = flex_dir(&[
        (
            "flow.flex.yaml",
            "entry: m:f\ninputs:\n  y:\n    type: int\n",
        ),
        ("m.py", "def f(x: int):\n    return x\n"),
    ]);
    let r = env.run(&["flow", "test", s(mismatch.path()), "--inputs", "y=1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("Provided signature of inputs does not match the entry"),
        "{}",
        r.stderr
    );

    let (_t, dir) = flow("flex_cls");
    let r = env.run(&["flow", "validate", s(&dir)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("valid flow with 1 input, 1 output and 2 nodes"),
        "{}",
        r.stdout
    );
}

#[test]
fn serve_answers_a_flex_flow() {
    let env = Env::new();
    let (_t, dir) = flow("flex_fn");
    let served = FlowServe::start(&env, &dir);
    let r = served.score(
        &[("content-type", "application/json")],
        r#"{"weight": "2"}"#,
    );
    let reply = r.text;
    let v: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["total"], json!(4.0), "{reply}");
    assert_eq!(v["zone"], json!("B"), "{reply}");
}

#[test]
fn generator_class_batch_keeps_outputs_and_aggregates_joined_text() {
    let env = Env::new();
    let dir = flex_dir(&[
        ("flow.flex.yaml", "entry: g:Shout\n"),
        (
            "g.py",
            "class Shout:\n    def __call__(self, word: str):\n        for c in word:\n            yield c.upper()\n\n    def __aggregate__(self, results):\n        return {'joined': '|'.join(results)}\n",
        ),
        ("data.jsonl", "{\"word\": \"ab\"}\n{\"word\": \"cd\"}\n"),
    ]);
    let out = dir.path().join("out");
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(dir.path()),
        "--data",
        s(&dir.path().join("data.jsonl")),
        "--name",
        "shout",
        "--output-dir",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        read_jsonl(&out.join("flow_outputs/output.jsonl")),
        vec![
            json!({"line_number": 0, "output": "AB"}),
            json!({"line_number": 1, "output": "CD"}),
        ]
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics, json!({"joined": "AB|CD"}));
}

#[test]
fn additional_includes_reach_a_flex_entry() {
    let env = Env::new();
    let root = tempfile::tempdir().unwrap();
    let common = root.path().join("common");
    let dir = root.path().join("flow");
    std::fs::create_dir_all(&common).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        common.join("shared_words.py"),
        "def shout(t):\n    return t.upper() + '!'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flow.flex.yaml"),
        "entry: main:run\nadditional_includes:\n- ../common/shared_words.py\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("main.py"),
        "from shared_words import shout\n\ndef run(text: str) -> str:\n    return shout(text)\n",
    )
    .unwrap();
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "text=hey"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim_end(), "HEY!");
}

#[test]
fn connection_typed_init_kwargs_become_connections() {
    let env = Env::new();
    env.connection("name: cc\ntype: custom\nconfigs:\n  region: north\nsecrets:\n  token: t0k\n");
    let (_t, dir) = flow("flex_model");
    std::fs::write(dir.join("flow.flex.yaml"), "entry: conn_user:Region\n").unwrap();
    let init = write_json(
        dir.parent().unwrap(),
        "i.json",
        json!({"conn": "cc", "suffix": "!"}),
    );
    let r = env.run(&[
        "flow",
        "test",
        s(&dir),
        "--inputs",
        "key=region",
        "--init",
        &init,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim_end(), "CustomConnection:north!:t0k");
}

/// promptflow's operation context, as a flex entry reads it: the local flow id, and a fresh
/// root run id for each line.
#[test]
fn a_flex_entry_reads_promptflows_operation_context() {
    let env = Env::new();
    let (_d, dir) = flow("flex_context");
    let ids: Vec<serde_json::Value> = (0..2)
        .map(|_| {
            let r = env.run(&["flow", "test", dir.to_str().unwrap()]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            r.json()
        })
        .collect();
    for v in &ids {
        assert_eq!(v["flow_id"], "default_flow_id", "{v}");
        assert_eq!(v["root_run_id"].as_str().unwrap().len(), 36, "{v}");
    }
    assert_ne!(ids[0]["root_run_id"], ids[1]["root_run_id"]);
}

const BUILTIN_CALL_PY: &str = r#"
from promptflow._sdk.entities import OpenAIConnection
from promptflow.tools.openai import chat


def entry(question: str, base: str) -> str:
    # As promptflow's `builtin_llm` flow does: a connection built in code, and the built-in
    # chat tool called as a function.
    connection = OpenAIConnection(api_key="sk-code", base_url=base + "/v1")
    return chat(connection=connection, prompt="system:\nBe brief.\nuser:\n{{question}}", model="m",
                max_tokens=16, question=question)
"#;

#[test]
fn python_code_calls_the_builtin_chat_tool_which_runs_in_the_host() {
    let server = FakeOpenAi::start(0);
    let env = Env::new();
    let dir = flex_dir(&[
        ("flow.flex.yaml", "entry: builtin_call:entry\n"),
        ("builtin_call.py", BUILTIN_CALL_PY),
    ]);
    let base = format!("base={}", server.base);
    let r = env.run(&[
        "flow",
        "test",
        s(dir.path()),
        "--inputs",
        "question=Late checkout?",
        &base,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A function returning text gives the flow output `output`, as in promptflow.
    assert_eq!(r.stdout.trim_end(), "echo: Late checkout?");
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (path, body) = &requests[0];
    assert!(path.ends_with("/v1/chat/completions"), "{path}");
    assert_eq!(body["model"], "m", "{body}");
    assert_eq!(body["max_tokens"], 16, "{body}");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Late checkout?"}
        ]),
        "{body}"
    );
}

/// Issue 21: flows import promptflow's private modules (`promptflow.core._flow` for Prompty,
/// `promptflow.core._connection` for the connection classes), and `Prompty.load(source,
/// model={...})` checks the file with the model it is given: a file without its parameters or
/// configuration runs when the caller supplies them, as in promptflow 1.18.5.
#[test]
fn prompty_from_private_modules_with_the_model_given_at_load() {
    let server = FakeOpenAi::start(0);
    let env = Env::new();
    let entry = format!(
        "from pathlib import Path\n\
         from promptflow.core._flow import Prompty\n\
         from promptflow.core._connection import CustomConnection, _Connection\n\n\
         def ask(question: str = 'hi'):\n\
         \x20   assert issubclass(CustomConnection, _Connection)\n\
         \x20   p = Prompty.load(\n\
         \x20       source=Path(__file__).parent / 'bare.prompty',\n\
         \x20       model={{'configuration': {{'type': 'openai', 'api_key': 'k', 'base_url': '{}/v1', 'model': 'm'}},\n\
         \x20              'parameters': {{'max_tokens': 20}}}},\n\
         \x20   )\n\
         \x20   return p(question=question)\n",
        server.base
    );
    let dir = flex_dir(&[
        ("entry.py", &entry),
        ("flow.flex.yaml", "entry: entry:ask\n"),
        (
            "bare.prompty",
            "---\nname: bare\ninputs:\n  question:\n    type: string\n---\nuser:\n{{question}}\n",
        ),
    ]);
    let r = env.run(&["flow", "test", s(dir.path()), "--inputs", "question=why"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim_end(), "echo: why");
}

/// Issue 21: a prompty called with `stream: true` from a flex entry yields the model's own chunks
/// (here one a word), as promptflow 1.18.5's Prompty does; the entry's count is promptflow's, not
/// one a character. (An AsyncPrompty's stream fails in promptflow 1.18.5 however it is iterated;
/// flowrt gives it as the same plain generator.)
#[test]
fn a_streamed_prompty_yields_the_models_chunks() {
    let server = FakeOpenAi::start(0);
    let env = Env::new();
    let prompty = format!(
        "---\nname: s\nmodel:\n  api: chat\n  configuration:\n    type: openai\n    api_key: k\n    base_url: {}/v1\n    model: m\n  parameters:\n    stream: true\ninputs:\n  question:\n    type: string\n---\nuser:\n{{{{question}}}}\n",
        server.base
    );
    let dir = flex_dir(&[
        ("s.prompty", &prompty),
        (
            "entry.py",
            "from pathlib import Path\n\
             from promptflow.core import AsyncPrompty, Prompty\n\n\
             def count(question: str):\n\
             \x20   p = Prompty.load(source=Path(__file__).parent / 's.prompty')\n\
             \x20   return {'chunks': [c for c in p(question=question)]}\n\n\
             async def count_async(question: str):\n\
             \x20   p = AsyncPrompty.load(source=Path(__file__).parent / 's.prompty')\n\
             \x20   return {'chunks': [c for c in await p(question=question)]}\n",
        ),
        ("flow.flex.yaml", "entry: entry:count\n"),
    ]);
    for entry in ["count", "count_async"] {
        std::fs::write(
            dir.path().join("flow.flex.yaml"),
            format!("entry: entry:{entry}\n"),
        )
        .unwrap();
        let r = env.run(&[
            "flow",
            "test",
            s(dir.path()),
            "--inputs",
            "question=tides turn",
        ]);
        assert_eq!(r.code, 0, "{entry}: {}", r.stderr);
        assert_eq!(
            r.json(),
            json!({"chunks": ["echo: ", "tides ", "turn"]}),
            "{entry}"
        );
    }
}
