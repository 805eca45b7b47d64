//! Executor behaviour over a fake invoker: scheduling, bypass, references, aggregation, failures,
//! timeouts. Tool "code" is a Rust closure keyed by the tool file name.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_executor::{
    prepare_inputs, Executor, ExecutorOptions, Invocation, NoObserver, NodeArg, NodeStatus,
    NodeValue, ToolFailure, ToolInvoker, ToolOutcome,
};
use flowrt_flow::{load_flow, LoadOptions};
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fake tool set: `echo.py` returns its args as an object (bypassed args as "<bypassed>",
/// literals as {"literal": v}); `sleep.py` sleeps `ms` then returns the arg `v`; `fail.py` fails;
/// `gen.py` returns a generator of its `items`; `agg.py` logs metric "n" = len of arg `xs`.
struct Fake {
    calls: Mutex<Vec<String>>,
}

fn arg_json(a: &NodeArg) -> Value {
    match a {
        NodeArg::Value { value, .. } => value.clone(),
        NodeArg::Literal(v) => json!({ "literal": v }),
        NodeArg::Bypassed => json!("<bypassed>"),
    }
}

impl ToolInvoker for Fake {
    async fn invoke(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        self.calls.lock().unwrap().push(call.node.name.clone());
        let args: IndexMap<String, Value> = call
            .args
            .iter()
            .map(|(k, a)| (k.clone(), arg_json(a)))
            .collect();
        let file = call.node.source.path().unwrap_or_default().to_string();
        match file.as_str() {
            "echo.py" => Ok(ToolOutcome::value(serde_json::to_value(&args).unwrap())),
            "sleep.py" => {
                let ms = args["ms"]["literal"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ToolOutcome::value(
                    args.get("v").cloned().unwrap_or(Value::Null),
                ))
            }
            "fail.py" => Err(ToolFailure::new("ValueError", "boom")),
            "gen.py" => {
                let items = args["items"]["literal"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let joined = items
                    .iter()
                    .map(|v| v.as_str().unwrap_or("").to_string())
                    .collect();
                Ok(ToolOutcome {
                    output: NodeValue::Generator {
                        chunks: items,
                        joined,
                    },
                    ..ToolOutcome::value(Value::Null)
                })
            }
            "agg.py" => {
                let n = args["xs"].as_array().map(|a| a.len()).unwrap_or(0);
                let mut o = ToolOutcome::value(json!(n));
                o.metrics.push(("n".into(), json!(n)));
                o.metrics.push(("xs".into(), args["xs"].clone()));
                Ok(o)
            }
            other => Err(ToolFailure::new("Unknown", other.to_string())),
        }
    }
}

struct Case {
    _dir: tempfile::TempDir,
    exec: Executor<Fake>,
}

fn case(yaml: &str, timeout: Option<Duration>) -> Case {
    case_with(
        yaml,
        ExecutorOptions {
            line_timeout: timeout,
            ..ExecutorOptions::default()
        },
    )
}

fn case_with(yaml: &str, options: ExecutorOptions) -> Case {
    let dir = tempfile::tempdir().unwrap();
    for f in ["echo.py", "sleep.py", "fail.py", "gen.py", "agg.py"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    std::fs::write(dir.path().join("flow.dag.yaml"), yaml).unwrap();
    let flow = load_flow(dir.path(), &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let exec = Executor::new(
        Arc::new(flow),
        Arc::new(Fake {
            calls: Mutex::new(Vec::new()),
        }),
        Arc::new(NoObserver),
        options,
    );
    Case { _dir: dir, exec }
}

fn inputs(v: Value) -> IndexMap<String, Value> {
    serde_json::from_value(v).unwrap()
}

async fn run(c: &Case, given: Value) -> flowrt_executor::LineResult {
    let prepared = prepare_inputs(c.exec.flow(), &inputs(given)).unwrap();
    c.exec.run_line(0, prepared).await
}

const BYPASS: &str = r#"
inputs:
  mode: {type: string}
outputs:
  a: {reference: "${a.output}"}
  b: {reference: "${b.output}"}
  c: {reference: "${c.output}"}
  d: {reference: "${d.output}"}
  e: {reference: "${e.output}"}
nodes:
- name: a
  type: python
  source: {type: code, path: echo.py}
  inputs: {m: "${inputs.mode}"}
  activate: {when: "${inputs.mode}", is: on}
- name: b
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${a.output.m}"}
- name: c
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${b.output}"}
  activate: {when: "${inputs.mode}", is: off}
- name: d
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${a.output}"}
  activate: {when: "${b.output}", is: 1}
- name: e
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${a.output}", y: "${inputs.mode}", z: 3}
"#;

#[tokio::test]
async fn node_inputs_are_kept_only_when_asked() {
    const FLOW: &str = r#"
inputs:
  mode: {type: string}
outputs:
  a: {reference: "${a.output}"}
nodes:
- name: a
  type: python
  source: {type: code, path: echo.py}
  inputs: {m: "${inputs.mode}", k: 5}
"#;
    let traced = case_with(
        FLOW,
        ExecutorOptions {
            record_node_inputs: true,
            ..ExecutorOptions::default()
        },
    );
    let line = run(&traced, json!({"mode": "on"})).await;
    assert_eq!(
        line.node_runs[0].inputs.as_deref(),
        Some(r#"{"m":"on","k":5}"#)
    );
    let untraced = case(FLOW, None);
    let line = run(&untraced, json!({"mode": "on"})).await;
    assert_eq!(
        line.node_runs[0].inputs, None,
        "not kept: nothing reads them"
    );
}

#[tokio::test]
async fn activate_and_bypass_rules() {
    let c = case(BYPASS, None);
    // mode=off: a bypassed; b (all node inputs bypassed) bypassed; c's condition holds so it runs
    // with a bypassed input; d's `when` node is bypassed so d is bypassed; e has a flow input too
    // but only node inputs count: its only node input is bypassed -> bypassed.
    let r = run(&c, json!({"mode": "off"})).await;
    assert!(r.succeeded(), "{:?}", r.error);
    assert_eq!(
        serde_json::to_value(&r.outputs).unwrap(),
        json!({"a": null, "b": null, "c": {"x": "<bypassed>"}, "d": null, "e": null})
    );
    let statuses: IndexMap<_, _> = r
        .node_runs
        .iter()
        .map(|n| (n.node.clone(), n.status))
        .collect();
    assert_eq!(statuses["a"], NodeStatus::Bypassed);
    assert_eq!(statuses["c"], NodeStatus::Completed);

    let r = run(&c, json!({"mode": "on"})).await;
    assert_eq!(
        serde_json::to_value(&r.outputs).unwrap(),
        json!({"a": {"m": "on"}, "b": {"x": "on"}, "c": null, "d": null,
               "e": {"x": {"m": "on"}, "y": "on", "z": {"literal": 3}}})
    );
}

#[tokio::test]
async fn activate_compares_like_python() {
    let yaml = r#"
inputs:
  n: {type: int}
outputs:
  t: {reference: "${t.output}"}
nodes:
- name: t
  type: python
  source: {type: code, path: echo.py}
  inputs: {n: "${inputs.n}"}
  activate: {when: "${inputs.n}", is: false}
"#;
    let c = case(yaml, None);
    // `is: false` matches 0 because False == 0 in Python.
    assert_eq!(
        run(&c, json!({"n": "0"})).await.outputs["t"],
        json!({"n": 0})
    );
    assert_eq!(run(&c, json!({"n": 1})).await.outputs["t"], Value::Null);
}

#[tokio::test]
async fn independent_nodes_run_in_parallel() {
    let mut yaml =
        String::from("inputs: {}\noutputs:\n  all: {reference: \"${join.output}\"}\nnodes:\n");
    for i in 0..8 {
        yaml.push_str(&format!(
            "- name: s{i}\n  type: python\n  source: {{type: code, path: sleep.py}}\n  inputs: {{ms: 200, v: {i}}}\n"
        ));
    }
    yaml.push_str(
        "- name: join\n  type: python\n  source: {type: code, path: echo.py}\n  inputs:\n",
    );
    for i in 0..8 {
        yaml.push_str(&format!("    x{i}: \"${{s{i}.output}}\"\n"));
    }
    let c = case(&yaml, None);
    let t = Instant::now();
    let r = run(&c, json!({})).await;
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.outputs["all"]["x7"], json!({"literal": 7}));
}

#[tokio::test]
async fn a_failing_node_fails_the_line_and_names_the_node() {
    let yaml = r#"
inputs: {}
outputs:
  o: {reference: "${after.output}"}
nodes:
- name: broken
  type: python
  source: {type: code, path: fail.py}
- name: slow
  type: python
  source: {type: code, path: sleep.py}
  inputs: {ms: 5000}
- name: after
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${broken.output}"}
"#;
    let c = case(yaml, None);
    let t = Instant::now();
    let r = run(&c, json!({})).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a failure must cancel the rest of the line"
    );
    let e = r.error.expect("line must fail");
    assert_eq!(e.to_string(), "node 'broken' failed: ValueError: boom");
    let statuses: IndexMap<_, _> = r
        .node_runs
        .iter()
        .map(|n| (n.node.clone(), n.status))
        .collect();
    assert_eq!(statuses["slow"], NodeStatus::Canceled);
    assert!(!statuses.contains_key("after"));
}

#[tokio::test]
async fn line_timeout_cancels_running_nodes() {
    let yaml = r#"
inputs: {}
outputs:
  o: {reference: "${slow.output}"}
nodes:
- name: slow
  type: python
  source: {type: code, path: sleep.py}
  inputs: {ms: 5000}
"#;
    let c = case(yaml, Some(Duration::from_millis(100)));
    let r = run(&c, json!({})).await;
    let e = r.error.expect("line must time out");
    assert_eq!(e.failure.error_type, "LineExecutionTimeoutError");
    assert_eq!(r.node_runs[0].status, NodeStatus::Canceled);
}

#[tokio::test]
async fn references_into_outputs() {
    let yaml = r#"
inputs:
  x: {type: object}
outputs:
  whole: {reference: "${n}"}
  deep: {reference: "${n.output.x.list[1]}"}
  last: {reference: "${n.output.x.list[-1]}"}
  key: {reference: "${n.output.x['a b']}"}
  bracket_after_output: {reference: "${n.output['x']}"}
nodes:
- name: n
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${inputs.x}"}
"#;
    let c = case(yaml, None);
    let r = run(&c, json!({"x": {"list": [1, 2, 3], "a b": "sp"}})).await;
    assert!(r.succeeded(), "{:?}", r.error);
    let whole = json!({"x": {"list": [1, 2, 3], "a b": "sp"}});
    assert_eq!(
        serde_json::to_value(&r.outputs).unwrap(),
        json!({"whole": whole, "deep": 2, "last": 3, "key": "sp", "bracket_after_output": whole})
    );
}

#[tokio::test]
async fn missing_key_in_a_reference_fails_with_the_available_keys() {
    let yaml = r#"
inputs: {}
outputs:
  o: {reference: "${n.output.nope}"}
nodes:
- name: n
  type: python
  source: {type: code, path: echo.py}
  inputs: {a: 1}
"#;
    let c = case(yaml, None);
    let e = run(&c, json!({})).await.error.expect("must fail");
    assert_eq!(
        e.to_string(),
        "InvalidReference: output 'o' (${n.output.nope}): key 'nope' not found (available keys: a)"
    );
}

#[tokio::test]
async fn generator_outputs_are_joined_unless_a_node_consumes_them() {
    let yaml = r#"
inputs: {}
outputs:
  alone: {reference: "${g1.output}"}
  shared: {reference: "${g2.output}"}
  consumer: {reference: "${c.output}"}
nodes:
- name: g1
  type: python
  source: {type: code, path: gen.py}
  inputs: {items: "${inputs.none}"}
- name: g2
  type: python
  source: {type: code, path: gen.py}
  inputs: {items: [x]}
- name: c
  type: python
  source: {type: code, path: echo.py}
  inputs: {chunks: "${g2.output}"}
"#
    .replace("{items: \"${inputs.none}\"}", "{items: [a, b]}");
    let c = case(&yaml, None);
    let r = run(&c, json!({})).await;
    assert_eq!(r.outputs["alone"], json!("ab"));
    assert_eq!(r.outputs["shared"], json!(""));
    assert_eq!(r.outputs["consumer"], json!({"chunks": ["x"]}));
}

#[tokio::test]
async fn aggregation_runs_over_completed_lines_with_null_for_bypassed() {
    let yaml = r#"
inputs:
  x: {type: int}
outputs:
  y: {reference: "${maybe.output}"}
  dropped: {reference: "${agg.output}"}
nodes:
- name: maybe
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${inputs.x}"}
  activate: {when: "${inputs.x}", is: 1}
- name: agg
  type: python
  source: {type: code, path: agg.py}
  inputs: {xs: "${maybe.output.x}", raw: "${inputs.x}"}
  aggregation: true
"#;
    let c = case(yaml, None);
    let l0 = run(&c, json!({"x": 1})).await;
    let l1 = run(&c, json!({"x": "2"})).await;
    assert!(
        !l0.outputs.contains_key("dropped"),
        "outputs reading aggregation nodes are dropped"
    );
    let agg = c.exec.run_aggregation(&[&l0, &l1]).await;
    assert!(agg.error.is_none());
    assert_eq!(
        serde_json::to_value(&agg.metrics).unwrap(),
        json!({"n": 2, "xs": [1, null]})
    );
}

#[tokio::test]
async fn inputs_are_converted_and_required() {
    let yaml = r#"
inputs:
  n: {type: int}
  h: {type: list, is_chat_history: true}
  d: {type: double, default: 0}
outputs:
  o: {reference: "${e.output}"}
nodes:
- name: e
  type: python
  source: {type: code, path: echo.py}
  inputs: {n: "${inputs.n}", h: "${inputs.h}", d: "${inputs.d}"}
"#;
    let c = case(yaml, None);
    let r = run(&c, json!({"n": "7", "extra": 1})).await;
    assert_eq!(r.outputs["o"], json!({"n": 7, "h": [], "d": 0.0}));
    let err = prepare_inputs(c.exec.flow(), &inputs(json!({}))).unwrap_err();
    assert_eq!(err.to_string(), "missing required input 'n' (int)");
    let err = prepare_inputs(c.exec.flow(), &inputs(json!({"n": "seven"}))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input 'n': value 'seven' is not a valid int"
    );
}

#[tokio::test]
async fn a_null_default_declares_no_default() {
    let yaml = r#"
inputs:
  o: {type: object, default: null}
outputs:
  back: {reference: "${inputs.o}"}
nodes:
- name: e
  type: python
  source: {type: code, path: echo.py}
  inputs: {o: "${inputs.o}"}
"#;
    let c = case(yaml, None);
    let err = prepare_inputs(c.exec.flow(), &inputs(json!({}))).unwrap_err();
    assert_eq!(err.to_string(), "missing required input 'o' (object)");
    assert_eq!(run(&c, json!({"o": "{}"})).await.outputs["back"], json!({}));
}

#[tokio::test]
async fn outputs_and_activate_accept_promptflow_literals_and_the_flow_prefix() {
    // promptflow's contract: an output `reference` that is not `${...}` is the value itself,
    // `${flow.x}` reads input x, and `activate.when: dummy` / `is: dummy` always runs the node
    // (even though every node it reads was bypassed).
    let yaml = r#"
inputs:
  q: {type: string}
outputs:
  text: {reference: "fixed text"}
  number: {reference: 42}
  old_prefix: {reference: "${flow.q}"}
  always: {reference: "${always.output}"}
  never: {reference: "${never.output}"}
nodes:
- name: off
  type: python
  source: {type: code, path: echo.py}
  inputs: {q: "${flow.q}"}
  activate: {when: "${inputs.q}", is: "other"}
- name: always
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${off.output}"}
  activate: {when: dummy, is: dummy}
- name: never
  type: python
  source: {type: code, path: echo.py}
  inputs: {x: "${inputs.q}"}
  activate: {when: 1, is: 2}
"#;
    let c = case(yaml, None);
    let r = run(&c, json!({"q": "hi"})).await;
    assert!(r.succeeded(), "{:?}", r.error);
    assert_eq!(
        serde_json::to_value(&r.outputs).unwrap(),
        json!({"text": "fixed text", "number": 42, "old_prefix": "hi",
               "always": {"x": "<bypassed>"}, "never": null})
    );
}
