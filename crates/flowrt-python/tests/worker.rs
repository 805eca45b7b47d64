//! Integration tests: real `python3` workers running the fixtures in `tests/fixtures/`.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_api::{Connection, ConnectionKind};
use flowrt_python::{
    default_python, Arg, CallError, CallOutput, Output, ToolCall, ToolSource, WorkerPool,
    WorkerSpec,
};
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Fixture {
    pool: Arc<WorkerPool>,
    _state: tempfile::TempDir,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

fn pool_with(size: usize, env: Vec<(String, String)>) -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let spec = WorkerSpec {
        python: default_python(),
        flow_dir: fixtures_dir(),
        env,
        state_dir: state.path().to_path_buf(),
    };
    Fixture {
        pool: Arc::new(WorkerPool::new(spec, size)),
        _state: state,
    }
}

fn pool() -> Fixture {
    pool_with(1, vec![])
}

fn code(node: &str, path: &str, args: Vec<(&str, Arg)>) -> ToolCall {
    ToolCall {
        node: node.into(),
        source: ToolSource::Code { path: path.into() },
        args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        timeout: None,
    }
}

fn lit(v: Value) -> Arg {
    Arg::Literal(v)
}

fn val(v: Value) -> Arg {
    Arg::Value(v)
}

fn value(out: CallOutput) -> Value {
    match out.output {
        Output::Value(v) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

#[tokio::test]
async fn simple_call_and_default() {
    let f = pool();
    let out = f
        .pool
        .call(code("echo", "echo.py", vec![("text", val(json!("hi")))]))
        .await
        .unwrap();
    assert_eq!(out.stdout, "");
    assert!(out.metrics.is_empty());
    assert_eq!(value(out), json!("hi!"));
    // the tool is loaded once and called again
    let out = f
        .pool
        .call(code(
            "echo",
            "echo.py",
            vec![("text", val(json!("a"))), ("suffix", lit(json!("?")))],
        ))
        .await
        .unwrap();
    assert_eq!(value(out), json!("a?"));
    f.pool.shutdown().await;
}

#[tokio::test]
async fn literal_conversion_table() {
    let f = pool();
    // (param, literal, expected [value, kind]) ; None = conversion error
    let cases: Vec<(&str, Value, Option<Value>)> = vec![
        ("i", json!(3.7), Some(json!([3, "int"]))),
        ("i", json!("12"), Some(json!([12, "int"]))),
        ("i", json!("2.0"), None),
        ("i", json!([1]), None),
        ("f", json!("0.25"), Some(json!([0.25, "float"]))),
        ("f", json!(2), Some(json!([2.0, "float"]))),
        ("f", json!("abc"), None),
        ("b", json!(true), Some(json!([true, "bool"]))),
        ("b", json!("TRUE"), Some(json!([true, "bool"]))),
        ("b", json!("False"), Some(json!([false, "bool"]))),
        ("b", json!("yes"), None),
        ("b", json!(1), None),
        ("s", json!(404), Some(json!(["404", "str"]))),
        ("s", json!(true), Some(json!(["True", "str"]))),
        ("s", json!(["a", 1]), Some(json!(["['a', 1]", "str"]))),
        (
            "s",
            json!("hello ${inputs.x}"),
            Some(json!(["hello ${inputs.x}", "str"])),
        ),
        ("s", json!(""), Some(json!(["default", "str"]))),
        ("s", Value::Null, Some(json!(["default", "str"]))),
        (
            "l",
            json!("[1, \"two\", 3.5]"),
            Some(json!([[1, "two", 3.5], "list"])),
        ),
        ("l", json!([1, 2]), Some(json!([[1, 2], "list"]))),
        ("l", json!("{\"a\": 1}"), None),
        ("l", json!("not json"), None),
        (
            "d",
            json!("{\"k\": [1, 2]}"),
            Some(json!([{"k": [1, 2]}, "dict"])),
        ),
        (
            "d",
            json!("plain words"),
            Some(json!(["plain words", "str"])),
        ),
        ("d", json!({"x": 1}), Some(json!([{"x": 1}, "dict"]))),
        ("d", json!([1, 2]), Some(json!([[1, 2], "list"]))),
        ("raw", json!("12"), Some(json!(["12", "str"]))),
        ("raw", json!("yes"), Some(json!(["yes", "str"]))),
        ("extra_kw", json!("12"), Some(json!(["12", "str"]))),
        (
            "extra_kw",
            json!([1, true]),
            Some(json!([[1, true], "list"])),
        ),
    ];
    for (param, literal, expected) in cases {
        let call = code(
            "kinds_node",
            "kinds.py",
            vec![(param, lit(literal.clone()))],
        );
        let result = f.pool.call(call).await;
        match expected {
            Some(expected) => {
                let out = value(result.unwrap_or_else(|e| panic!("{param}={literal}: {e}")));
                assert_eq!(out[param], expected, "{param} = {literal}");
            }
            None => match result {
                Err(CallError::Tool { message, .. }) => {
                    assert!(message.contains(param), "{message}");
                    assert!(message.contains("kinds_node"), "{message}");
                }
                other => panic!("{param} = {literal}: expected a conversion error, got {other:?}"),
            },
        }
    }
    // references are passed unchanged
    let out = f
        .pool
        .call(code(
            "kinds_node",
            "kinds.py",
            vec![("i", val(json!("12")))],
        ))
        .await
        .unwrap();
    assert_eq!(value(out)["i"], json!(["12", "str"]));
    f.pool.shutdown().await;
}

#[tokio::test]
async fn bypassed_arguments() {
    let f = pool();
    let out = f
        .pool
        .call(code(
            "req",
            "required.py",
            vec![("needed", Arg::Bypassed), ("optional", Arg::Bypassed)],
        ))
        .await
        .unwrap();
    assert_eq!(value(out), json!([null, "opt-default"]));
    // a missing required input is a load error naming the input and node
    let err = f
        .pool
        .call(code("req", "required.py", vec![]))
        .await
        .unwrap_err();
    match &err {
        CallError::Load { message } => {
            assert!(
                message.contains("needed") && message.contains("req"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    // an input the tool does not accept (no **kwargs) is an error naming it
    let err = f
        .pool
        .call(code(
            "req",
            "required.py",
            vec![("needed", val(json!(1))), ("bogus", val(json!(2)))],
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    f.pool.shutdown().await;
}

#[tokio::test]
async fn class_tools_cache_instances_per_node_and_init_values() {
    let f = pool();
    let call = |node: &str, start: Value, text: &str| {
        code(
            node,
            "counter_cls.py",
            vec![("start", lit(start)), ("text", val(json!(text)))],
        )
    };
    let a1 = value(f.pool.call(call("a", json!("2"), "x")).await.unwrap());
    assert_eq!(a1["start"], json!(2));
    assert_eq!(a1["start_type"], json!("int"));
    assert_eq!(a1["calls"], json!(1));
    assert_eq!(a1["label"], json!("c"));
    let b1 = value(f.pool.call(call("b", json!(5), "y")).await.unwrap());
    assert_eq!(b1["start"], json!(5));
    assert_eq!(b1["calls"], json!(1));
    let a2 = value(f.pool.call(call("a", json!("2"), "z")).await.unwrap());
    assert_eq!(a2["calls"], json!(2), "instance of node a is reused");
    assert_eq!(a2["instances"], json!(2));
    // a different init value for the same node gives a new instance
    let a3 = value(f.pool.call(call("a", json!(3), "z")).await.unwrap());
    assert_eq!(a3["calls"], json!(1));
    assert_eq!(a3["instances"], json!(3));
    f.pool.shutdown().await;
}

#[tokio::test]
async fn a_union_annotation_converts_to_its_first_member() {
    let f = pool();
    let out = value(
        f.pool
            .call(code(
                "u",
                "union_tool.py",
                vec![
                    ("a", lit(json!("7"))),
                    ("b", lit(json!("2.5"))),
                    ("c", lit(json!("TRUE"))),
                ],
            ))
            .await
            .unwrap(),
    );
    assert_eq!(
        out,
        json!({"a": [7, "int"], "b": [2.5, "float"], "c": [true, "bool"]})
    );
    f.pool.shutdown().await;
}

#[tokio::test]
async fn class_tool_init_inputs_must_be_literals() {
    let f = pool();
    let err = f
        .pool
        .call(code(
            "a",
            "counter_cls.py",
            vec![("start", val(json!(2))), ("text", val(json!("x")))],
        ))
        .await
        .unwrap_err();
    match err {
        CallError::Load { message } => assert!(
            message.ends_with("initialization input 'start' requires a literal value, but a reference was received"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    f.pool.shutdown().await;
}

#[tokio::test]
async fn plain_class_with_tool_method_is_not_a_tool() {
    let f = pool();
    let err = f
        .pool
        .call(code("p", "plain_cls.py", vec![("text", val(json!("x")))]))
        .await
        .unwrap_err();
    match err {
        CallError::Load { message } => {
            assert!(message.contains("NoToolDefined"), "{message}");
            assert!(message.contains("plain_cls.py"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    f.pool.shutdown().await;
}

#[tokio::test]
async fn load_errors_name_the_file() {
    let f = pool();
    let err = f
        .pool
        .call(code("m", "missing_tool.py", vec![]))
        .await
        .unwrap_err();
    match &err {
        CallError::Load { message } => assert!(message.contains("missing_tool.py"), "{message}"),
        other => panic!("{other:?}"),
    }
    let err = f
        .pool
        .call(code("b", "broken_import.py", vec![]))
        .await
        .unwrap_err();
    match &err {
        CallError::Load { message } => {
            assert!(message.contains("broken_import.py"), "{message}");
            assert!(message.contains("definitely_not_a_module_xyz"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    f.pool.shutdown().await;
}

#[tokio::test]
async fn async_tool_and_sibling_imports() {
    let f = pool();
    let out = f
        .pool
        .call(code(
            "a",
            "async_tool.py",
            vec![("text", val(json!("abc"))), ("delay_ms", lit(json!("10")))],
        ))
        .await
        .unwrap();
    assert_eq!(out.stdout, "async start abc\nasync done abc\n");
    assert_eq!(value(out), json!("ABC"));
    let out = f
        .pool
        .call(code("h", "uses_helper.py", vec![("x", lit(json!("4")))]))
        .await
        .unwrap();
    assert_eq!(value(out), json!(40));
    f.pool.shutdown().await;
}

#[tokio::test]
async fn generator_is_drained_and_joined() {
    let f = pool();
    let out = f
        .pool
        .call(code(
            "g",
            "gen_tool.py",
            vec![("words", val(json!(["a", "b"])))],
        ))
        .await
        .unwrap();
    assert_eq!(
        out.stdout,
        "{\"id\": 999, \"ok\": true, \"output\": \"not the output\"}\n"
    );
    assert_eq!(
        out.output,
        Output::Generator {
            chunks: vec![json!("0:a "), json!("1:b "), Value::Null, json!(3)],
            joined: "0:a 1:b None3".into(),
        }
    );
    f.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_are_captured_per_call() {
    let f = pool();
    let mut handles = Vec::new();
    for tag in ["alpha", "beta", "gamma"] {
        let pool = f.pool.clone();
        handles.push(tokio::spawn(async move {
            pool.call(code(
                "p",
                "printer.py",
                vec![("tag", val(json!(tag))), ("pause_ms", lit(json!(100)))],
            ))
            .await
        }));
    }
    for (handle, tag) in handles.into_iter().zip(["alpha", "beta", "gamma"]) {
        let out = handle.await.unwrap().unwrap();
        let expected: String = (0..5).map(|i| format!("{tag}-{i}\n")).collect();
        assert_eq!(out.stdout, expected);
        assert_eq!(value(out), json!(tag));
    }
    f.pool.shutdown().await;
}

#[tokio::test]
async fn log_metric_is_collected() {
    let f = pool();
    let out = f
        .pool
        .call(code(
            "agg",
            "metrics_tool.py",
            vec![("values", val(json!([1, 2, 3, 4])))],
        ))
        .await
        .unwrap();
    assert_eq!(
        out.metrics,
        vec![
            ("count".to_string(), json!(4)),
            ("mean".to_string(), json!(2.5)),
            ("name".to_string(), json!("x")),
        ]
    );
    assert_eq!(value(out), json!(4));
    f.pool.shutdown().await;
}

fn custom_conn() -> Connection {
    let configs: IndexMap<String, String> = [("region", "eu-west"), ("tier", "gold")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let secrets: IndexMap<String, String> = [("api_key", "fake-key"), ("token", "t0k")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Connection {
        name: "custom_conn".into(),
        kind: ConnectionKind::Custom,
        configs,
        secrets,
    }
}

fn aoai_conn() -> Connection {
    Connection {
        name: "aoai_conn".into(),
        kind: ConnectionKind::AzureOpenAi,
        configs: [
            ("api_base", "http://127.0.0.1:9"),
            ("api_version", "2024-02-01"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        secrets: [("api_key".to_string(), "aoai-key".to_string())]
            .into_iter()
            .collect(),
    }
}

#[tokio::test]
async fn connections_are_injected_by_annotation() {
    let f = pool();
    let out = f
        .pool
        .call(code(
            "c",
            "conn_tool.py",
            vec![
                ("conn", Arg::Connection(custom_conn())),
                ("other", Arg::Connection(aoai_conn())),
                ("plain", Arg::Connection(custom_conn())),
                ("untyped", Arg::Connection(aoai_conn())),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(
        value(out),
        json!({
            "type": "CustomConnection",
            "name": "custom_conn",
            "region": "eu-west",
            "tier_attr": "gold",
            "key": "fake-key",
            "token_attr": "t0k",
            "other_type": "AzureOpenAIConnection",
            "other_key": "aoai-key",
            "other_base": "http://127.0.0.1:9",
            "plain": "custom_conn",
            "untyped": "aoai_conn",
        })
    );
    f.pool.shutdown().await;
}

#[tokio::test]
async fn environment_variables_and_cwd() {
    let f = pool_with(
        1,
        vec![
            ("CONF_GREETING".into(), "Hallo".into()),
            ("CONF_LIST".into(), "[1, 2]".into()),
        ],
    );
    let out = f
        .pool
        .call(code(
            "e",
            "env_tool.py",
            vec![(
                "names",
                lit(json!(
                    "[\"CONF_GREETING\", \"CONF_LIST\", \"CONF_UNSET_X\"]"
                )),
            )],
        ))
        .await
        .unwrap();
    let v = value(out);
    assert_eq!(v["CONF_GREETING"], json!("Hallo"));
    assert_eq!(v["CONF_LIST"], json!("[1, 2]"));
    assert_eq!(v["CONF_UNSET_X"], Value::Null);
    assert_eq!(
        PathBuf::from(v["cwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        fixtures_dir().canonicalize().unwrap()
    );
    f.pool.shutdown().await;
}

#[tokio::test]
async fn tool_exception_is_a_tool_error() {
    let f = pool();
    let err = f
        .pool
        .call(code(
            "divide",
            "raises.py",
            vec![("dividend", lit(json!("1"))), ("divisor", val(json!(0)))],
        ))
        .await
        .unwrap_err();
    match &err {
        CallError::Tool {
            error_type,
            message,
            traceback,
        } => {
            assert_eq!(error_type, "ValueError");
            assert!(message.contains("DIV-0042"), "{message}");
            assert!(traceback.contains("raises.py"), "{traceback}");
            assert!(!traceback.contains("flowrt_worker.py"), "{traceback}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("DIV-0042"));
    // the worker is fine afterwards
    let out = f
        .pool
        .call(code(
            "divide",
            "raises.py",
            vec![("dividend", lit(json!("1"))), ("divisor", val(json!(4)))],
        ))
        .await
        .unwrap();
    assert_eq!(value(out), json!(0.25));
    f.pool.shutdown().await;
}

#[tokio::test]
async fn crashes_are_reported_and_the_worker_replaced() {
    let f = pool();
    for (how, expect) in [("exit", "exited with code 3"), ("segfault", "SIGSEGV")] {
        let err = f
            .pool
            .call(code("crash", "crash.py", vec![("how", val(json!(how)))]))
            .await
            .unwrap_err();
        match &err {
            CallError::Crashed { detail } => {
                assert!(detail.contains(expect), "{detail}");
                assert!(
                    detail.contains(&format!("about to crash via {how}")),
                    "{detail}"
                );
            }
            other => panic!("{how}: {other:?}"),
        }
        let out = f
            .pool
            .call(code("crash", "crash.py", vec![("how", val(json!("no")))]))
            .await
            .unwrap();
        assert_eq!(value(out), json!("survived"));
    }
    f.pool.shutdown().await;
}

#[tokio::test]
async fn timeout_kills_and_replaces_the_worker() {
    let f = pool();
    let mut call = code("s", "sleeper.py", vec![("seconds", val(json!(30)))]);
    call.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let err = f.pool.call(call).await.unwrap_err();
    assert!(
        matches!(err, CallError::Timeout { seconds } if (seconds - 0.3).abs() < 1e-9),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut call = code("s", "sleeper.py", vec![("seconds", val(json!(0.01)))]);
    call.timeout = Some(Duration::from_secs(20));
    let out = f.pool.call(call).await.unwrap();
    assert_eq!(value(out), json!(0.01));
    f.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_run_in_parallel() {
    let f = pool();
    // warm up: spawn the worker and load the tool
    f.pool
        .call(code("s", "sleeper.py", vec![("seconds", val(json!(0.0)))]))
        .await
        .unwrap();
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..8 {
        let pool = f.pool.clone();
        handles.push(tokio::spawn(async move {
            pool.call(code(
                &format!("n{i}"),
                "sleeper.py",
                vec![("seconds", val(json!(0.3)))],
            ))
            .await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "8 x 0.3 s took {elapsed:?}"
    );
    f.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_of_two_spreads_calls() {
    let f = pool_with(2, vec![]);
    let mut handles = Vec::new();
    for _ in 0..4 {
        let pool = f.pool.clone();
        handles.push(tokio::spawn(async move {
            pool.call(code("s", "sleeper.py", vec![("seconds", val(json!(0.2)))]))
                .await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    f.pool.shutdown().await;
    // after shutdown the pool still works (spawns again lazily)
    let out = f
        .pool
        .call(code("echo", "echo.py", vec![("text", val(json!("again")))]))
        .await
        .unwrap();
    assert_eq!(value(out), json!("again!"));
}

#[tokio::test]
async fn rich_outputs_are_serialized() {
    let f = pool();
    let out = value(f.pool.call(code("r", "rich.py", vec![])).await.unwrap());
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a", "日本語", "point", "opaque", "t", "nan"]);
    assert_eq!(out["日本語"], json!("こんにちは 🚀"));
    assert_eq!(out["point"], json!({"x": 1, "y": 2}));
    assert_eq!(out["opaque"], json!("opaque-object"));
    assert_eq!(out["t"], json!([1, 2]));
    // JSON has no NaN: it travels as a marker that flowrt prints as promptflow does (`NaN`).
    assert_eq!(out["nan"], json!({"__flowrt_float__": "nan"}));
    f.pool.shutdown().await;
}

#[tokio::test]
async fn package_tools() {
    let f = pool();
    let out = f
        .pool
        .call(ToolCall {
            node: "p".into(),
            source: ToolSource::Package {
                tool: "pkg_demo.tools.shout".into(),
            },
            args: vec![
                ("text".into(), val(json!("hey"))),
                ("times".into(), lit(json!("2"))),
            ],
            timeout: None,
        })
        .await
        .unwrap();
    assert_eq!(value(out), json!("HEY HEY "));
    let out = f
        .pool
        .call(ToolCall {
            node: "g".into(),
            source: ToolSource::Package {
                tool: "pkg_demo.tools.Greeter.greet".into(),
            },
            args: vec![
                ("greeting".into(), lit(json!("Hello"))),
                ("name".into(), val(json!("Ada"))),
            ],
            timeout: None,
        })
        .await
        .unwrap();
    assert_eq!(value(out), json!("Hello, Ada"));
    let err = f
        .pool
        .call(ToolCall {
            node: "x".into(),
            source: ToolSource::Package {
                tool: "no_such_pkg_xyz.tools.fn".into(),
            },
            args: vec![],
            timeout: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Load { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_pkg_xyz"), "{err}");
    f.pool.shutdown().await;
}

#[tokio::test]
async fn spawn_failure_is_reported() {
    let state = tempfile::tempdir().unwrap();
    let pool = WorkerPool::new(
        WorkerSpec {
            python: PathBuf::from("/nonexistent/python3"),
            flow_dir: fixtures_dir(),
            env: vec![],
            state_dir: state.path().to_path_buf(),
        },
        1,
    );
    let err = pool
        .call(code("echo", "echo.py", vec![("text", val(json!("x")))]))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/python3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_does_not_fail_other_calls_on_the_same_worker() {
    let f = pool();
    let pool = f.pool.clone();
    let other = tokio::spawn(async move {
        pool.call(code("a", "sleeper.py", vec![("seconds", val(json!(1.0)))]))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stuck = code("b", "sleeper.py", vec![("seconds", val(json!(30)))]);
    stuck.timeout = Some(Duration::from_millis(300));
    let err = f.pool.call(stuck).await.unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    // The retired worker finishes the call it was already running before it is killed.
    assert_eq!(value(other.await.unwrap().unwrap()), json!(1.0));
    f.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_fails_only_the_crashing_call_among_those_in_flight() {
    let f = pool();
    let mut handles = Vec::new();
    for i in 0..3 {
        let pool = f.pool.clone();
        handles.push(tokio::spawn(async move {
            pool.call(code(
                &format!("s{i}"),
                "sleeper.py",
                vec![("seconds", val(json!(0.5)))],
            ))
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = f
        .pool
        .call(code("crash", "crash.py", vec![("how", val(json!("exit")))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Crashed { detail } if detail.contains("exited with code 3")),
        "{err:?}"
    );
    for h in handles {
        assert_eq!(value(h.await.unwrap().unwrap()), json!(0.5));
    }
    f.pool.shutdown().await;
}

fn entry_call(
    entry: &str,
    init: Option<Value>,
    aggregate: bool,
    args: Vec<(&str, Value)>,
) -> ToolCall {
    ToolCall {
        node: "entry".into(),
        source: ToolSource::Entry {
            entry: entry.into(),
            init: init.map(|v| v.as_object().unwrap().clone()),
            init_types: serde_json::Map::new(),
            aggregate,
        },
        args: args
            .into_iter()
            .map(|(k, v)| (k.to_string(), Arg::Value(v)))
            .collect(),
        timeout: None,
    }
}

#[tokio::test]
async fn flex_entry_signature() {
    let f = pool();
    let out = f
        .pool
        .call(ToolCall {
            node: "sig".into(),
            source: ToolSource::Signature {
                entry: "flex_entry:greet".into(),
            },
            args: vec![],
            timeout: None,
        })
        .await
        .unwrap();
    assert_eq!(
        value(out),
        json!({"name": "greet", "is_class": false, "has_aggregate": false, "init": [], "outputs": ["output"], "inputs": [
            {"name": "name", "type": "string", "has_default": false},
            {"name": "times", "type": "int", "has_default": true, "default": 2},
            {"name": "tags", "type": null, "has_default": true, "default": null},
        ]})
    );
    let out = f
        .pool
        .call(ToolCall {
            node: "sig".into(),
            source: ToolSource::Signature {
                entry: "flex_entry:Counter".into(),
            },
            args: vec![],
            timeout: None,
        })
        .await
        .unwrap();
    let v = value(out);
    assert_eq!(v["is_class"], json!(true));
    assert_eq!(v["has_aggregate"], json!(true));
    assert_eq!(v["outputs"], json!(["word", "size"]));
    assert_eq!(
        v["inputs"],
        json!([{"name": "word", "type": "string", "has_default": false}])
    );
    assert_eq!(
        v["init"][1],
        json!({"name": "step", "type": null, "has_default": true, "default": 1})
    );
    for (entry, needle) in [
        ("flex_entry:returns_dict", "return annotation 'dict'"),
        (
            "no_such_module:f",
            "Failed to load python module 'no_such_module'",
        ),
        ("flex_entry:nothing", "has no attribute 'nothing'"),
    ] {
        let e = f
            .pool
            .call(ToolCall {
                node: "sig".into(),
                source: ToolSource::Signature {
                    entry: entry.into(),
                },
                args: vec![],
                timeout: None,
            })
            .await
            .unwrap_err();
        match e {
            CallError::Load { message } => assert!(message.contains(needle), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn flex_entry_calls_and_errors() {
    let f = pool();
    let out = f
        .pool
        .call(entry_call(
            "flex_entry:greet",
            None,
            false,
            vec![
                ("name", json!("al")),
                ("times", json!(1)),
                ("unknown", json!(0)),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(value(out), json!("hi al"));
    let out = f
        .pool
        .call(entry_call(
            "flex_entry:agreet",
            None,
            false,
            vec![("name", json!("x"))],
        ))
        .await
        .unwrap();
    assert_eq!(value(out), json!({"hello": "x"}));
    match f
        .pool
        .call(entry_call(
            "flex_entry:agreet",
            None,
            false,
            vec![("name", json!("bad"))],
        ))
        .await
    {
        Err(CallError::Tool {
            error_type,
            message,
            ..
        }) => {
            assert_eq!(error_type, "ValueError");
            assert_eq!(message, "ValueError: bad name");
        }
        other => panic!("{other:?}"),
    }
    match f
        .pool
        .call(entry_call(
            "flex_entry:greet",
            None,
            false,
            vec![("name", json!(1)), ("times", json!("x"))],
        ))
        .await
    {
        Err(CallError::Tool { message, .. }) => {
            assert!(
                message.starts_with("Execution failure in 'greet': (TypeError)"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn flex_class_entry_keeps_its_instance_and_aggregates_dataclasses() {
    let f = pool();
    let init = Some(json!({"start": 10}));
    let mut rows = Vec::new();
    for word in ["a", "b"] {
        let out = f
            .pool
            .call(entry_call(
                "flex_entry:Counter",
                init.clone(),
                false,
                vec![("word", json!(word))],
            ))
            .await
            .unwrap();
        rows.push(value(out));
    }
    // One instance per (entry, init): the count goes on; the dataclass arrives as its fields.
    assert_eq!(
        rows,
        vec![
            json!({"word": "a", "size": 11}),
            json!({"word": "b", "size": 12})
        ]
    );
    let out = f
        .pool
        .call(entry_call(
            "flex_entry:Counter",
            init.clone(),
            true,
            vec![("results", json!(rows))],
        ))
        .await
        .unwrap();
    assert_eq!(value(out), json!({"types": ["Row"], "total": 23}));
    match f
        .pool
        .call(entry_call(
            "flex_entry:Counter",
            Some(json!({"step": 1})),
            false,
            vec![("word", json!("a"))],
        ))
        .await
    {
        Err(CallError::Tool {
            error_type,
            message,
            ..
        }) => {
            assert_eq!(error_type, "FlowEntryInitializationError");
            assert!(
                message.starts_with("Failed to initialize flow entry with '{'step': 1}', ex:'"),
                "{message}"
            );
            assert!(message.contains("start"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

struct Upper;

impl flowrt_python::HostCallbacks for Upper {
    fn call(&self, op: &str, args: Value) -> flowrt_python::CallbackFuture {
        let op = op.to_string();
        Box::pin(async move {
            match op.as_str() {
                "upper" => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(json!(args["text"].as_str().unwrap_or("").to_uppercase()))
                }
                _ => Err(format!("no such op {op}")),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_back_into_the_host() {
    let state = tempfile::tempdir().unwrap();
    let spec = WorkerSpec {
        python: default_python(),
        flow_dir: fixtures_dir(),
        env: vec![],
        state_dir: state.path().to_path_buf(),
    };
    let host = Arc::new(WorkerPool::new(spec, 1).with_callbacks(Arc::new(Upper)));
    // Several calls wait for their callbacks at once on one worker.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                host.call(entry_call(
                    "flex_entry:asks_host",
                    None,
                    false,
                    vec![("text", json!(format!("w{i}")))],
                ))
                .await
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(value(call.await.unwrap().unwrap()), json!(format!("W{i}")));
    }
    match host
        .call(entry_call(
            "flex_entry:asks_host_error",
            None,
            false,
            vec![("text", json!("x"))],
        ))
        .await
    {
        Err(CallError::Tool { message, .. }) => {
            assert!(
                message.contains("(HostCallError) no such op fail"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Without callbacks the Python side gets an error saying so.
    let f = pool();
    match f
        .pool
        .call(entry_call(
            "flex_entry:asks_host",
            None,
            false,
            vec![("text", json!("x"))],
        ))
        .await
    {
        Err(CallError::Tool { message, .. }) => {
            assert!(
                message.contains("created without host callbacks"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// Answers `connection` and `prompty` like the flowrt host, echoing the prompty request.
struct FakePrompty;

impl flowrt_python::HostCallbacks for FakePrompty {
    fn call(&self, op: &str, args: Value) -> flowrt_python::CallbackFuture {
        let op = op.to_string();
        Box::pin(async move {
            match op.as_str() {
                "connection" => Ok(json!({"name": args["name"], "type": "open_ai"})),
                "prompty" => {
                    assert!(args["source"]
                        .as_str()
                        .unwrap()
                        .ends_with("flex_ask.prompty"));
                    // A configuration object goes apart from the model dict: it replaces the
                    // file's configuration whole.
                    assert_eq!(
                        args["configuration"],
                        json!({"type": "openai", "model": "m1", "connection": "conn"})
                    );
                    assert_eq!(args["model"].get("configuration"), None);
                    let text = format!("echo: {}", args["inputs"]["question"].as_str().unwrap());
                    if args["model"]["response"] == "all" {
                        Ok(json!({"raw": true, "output": {
                            "model": "m1",
                            "usage": {"prompt_tokens": 7},
                            "choices": [{"message": {"role": "assistant", "content": text}}],
                        }}))
                    } else {
                        Ok(json!({"output": text}))
                    }
                }
                _ => Err(format!("no such op {op}")),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompty_calls_reach_the_host_and_raw_replies_have_attributes() {
    let state = tempfile::tempdir().unwrap();
    let spec = WorkerSpec {
        python: default_python(),
        flow_dir: fixtures_dir(),
        env: vec![],
        state_dir: state.path().to_path_buf(),
    };
    let host = WorkerPool::new(spec, 1).with_callbacks(Arc::new(FakePrompty));
    let out = host
        .call(entry_call(
            "flex_entry:uses_prompty",
            None,
            false,
            vec![("question", json!("hi"))],
        ))
        .await
        .unwrap();
    assert_eq!(value(out), json!("echo: hi"));
    let out = host
        .call(entry_call(
            "flex_entry:uses_prompty",
            None,
            false,
            vec![("question", json!("hi")), ("response", json!("all"))],
        ))
        .await
        .unwrap();
    assert_eq!(
        value(out),
        json!({"model": "m1", "prompt_tokens": 7, "content": "echo: hi"})
    );
}
