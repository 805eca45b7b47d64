//! The promptflow compatibility package and tool loading as promptflow's own flows use them:
//! real `python3` workers running the fixtures in `tests/fixtures/`.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_api::{Connection, ConnectionKind};
use flowrt_python::{
    default_python, Arg, CallError, Output, ToolCall, ToolSource, WorkerPool, WorkerSpec,
};
use serde_json::{json, Value};
use std::path::PathBuf;

struct Fixture {
    pool: WorkerPool,
    _state: tempfile::TempDir,
}

fn pool() -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let spec = WorkerSpec {
        python: default_python(),
        flow_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        env: vec![],
        state_dir: state.path().to_path_buf(),
    };
    Fixture {
        pool: WorkerPool::new(spec, 1),
        _state: state,
    }
}

fn code(path: &str, args: Vec<(&str, Arg)>) -> ToolCall {
    ToolCall {
        node: "n".into(),
        source: ToolSource::Code { path: path.into() },
        args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        timeout: None,
    }
}

async fn value(f: &Fixture, call: ToolCall) -> Value {
    match f
        .pool
        .call(call)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .output
    {
        Output::Value(v) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

fn custom(name: &str) -> Connection {
    Connection {
        name: name.into(),
        kind: ConnectionKind::Custom,
        configs: [("region".to_string(), "eu".to_string())]
            .into_iter()
            .collect(),
        secrets: [("api_key".to_string(), "k".to_string())]
            .into_iter()
            .collect(),
    }
}

#[tokio::test]
async fn tool_files_run_as_pf_main() {
    let f = pool();
    assert_eq!(
        value(&f, code("pf_main.py", vec![])).await,
        json!("__pf_main__")
    );
    // Another tool file is a module of its own (of the same name); a dataclass in it can use
    // postponed annotations.
    let out = value(
        &f,
        code(
            "future_dataclass.py",
            vec![("text", Arg::Value(json!("hi")))],
        ),
    )
    .await;
    assert_eq!(out, json!({"text": "hi", "score": 0.5}));
    assert_eq!(
        value(&f, code("pf_main.py", vec![])).await,
        json!("__pf_main__")
    );
}

#[tokio::test]
async fn custom_strong_type_connections_and_dict_of_a_connection() {
    let f = pool();
    let out = value(
        &f,
        code(
            "strong_conn_tool.py",
            vec![
                ("conn", Arg::Connection(custom("mine"))),
                ("plain", Arg::Connection(custom("plain"))),
            ],
        ),
    )
    .await;
    assert_eq!(
        out,
        json!({"type": "MyServiceConnection", "strong": true, "api_key": "k", "region": "eu",
               "tier": "class default", "dict": {"region": "eu", "api_key": "k"},
               "splat": {"region": "eu", "api_key": "k"}, "keys": ["region", "api_key"],
               "is_secret": [true, false]})
    );
}

#[tokio::test]
async fn an_assistant_definition_input_reads_its_yaml_file() {
    let f = pool();
    let out = value(
        &f,
        code(
            "assistant_tool.py",
            vec![("definition", Arg::Literal(json!("assistant.yaml")))],
        ),
    )
    .await;
    assert_eq!(
        out,
        json!({"type": "AssistantDefinition", "model": "fake-model",
               "instructions": "answer briefly", "tools": [{"type": "code_interpreter"}]})
    );
}

#[tokio::test]
async fn generators_inside_a_dict_output_are_joined() {
    let f = pool();
    let out = f.pool.call(code("nested_stream.py", vec![])).await.unwrap();
    assert_eq!(out.stdout, "streaming\n");
    match out.output {
        Output::Value(v) => assert_eq!(
            v,
            json!({"answer": "a b", "n": 1, "parts": ["12", {"deep": "xy"}]})
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_connection_parameter_given_an_unknown_name_fails_naming_node_and_connection() {
    let f = pool();
    let err = f
        .pool
        .call(code(
            "strong_conn_tool.py",
            vec![
                ("conn", Arg::Literal(json!("no_such_conn"))),
                ("plain", Arg::Connection(custom("plain"))),
            ],
        ))
        .await
        .unwrap_err();
    match err {
        CallError::Load { message } => assert_eq!(
            message,
            "Node 'n' input 'conn': connection 'no_such_conn' does not exist (tool 'use_strong' in \
             'strong_conn_tool.py' takes a MyServiceConnection there); create it with `flowrt \
             connection create --file CONN.yaml` or name an existing connection"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_openai_connection_has_base_url_and_no_api_base_as_in_promptflow() {
    // promptflow 1.18.5's OpenAIConnection has `base_url` (AzureOpenAIConnection has `api_base`).
    let f = pool();
    let conn = Connection {
        name: "oai".into(),
        kind: ConnectionKind::OpenAi,
        configs: [("base_url".to_string(), "http://127.0.0.1:9/v1".to_string())]
            .into_iter()
            .collect(),
        secrets: [("api_key".to_string(), "sk".to_string())]
            .into_iter()
            .collect(),
    };
    let out = value(
        &f,
        code("openai_attrs.py", vec![("conn", Arg::Connection(conn))]),
    )
    .await;
    assert_eq!(
        out,
        json!({"base_url": "http://127.0.0.1:9/v1", "api_key": "sk", "has_api_base": false})
    );
}

#[tokio::test]
async fn promptflows_service_connection_types_reach_tools_as_their_classes() {
    let f = pool();
    let conn = |name: &str, kind: ConnectionKind, configs: &[(&str, &str)]| Connection {
        name: name.into(),
        kind,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        secrets: [("api_key".to_string(), format!("{name}-key"))]
            .into_iter()
            .collect(),
    };
    let out = value(
        &f,
        code(
            "service_conns.py",
            vec![
                (
                    "serp",
                    Arg::Connection(conn("serp", ConnectionKind::Serp, &[])),
                ),
                (
                    "search",
                    Arg::Connection(conn(
                        "search",
                        ConnectionKind::CognitiveSearch,
                        &[("api_base", "https://s"), ("api_version", "2023-11-01")],
                    )),
                ),
                (
                    "forms",
                    Arg::Connection(conn(
                        "forms",
                        ConnectionKind::FormRecognizer,
                        &[
                            ("endpoint", "https://f"),
                            ("api_version", "2023-07-31"),
                            ("api_type", "Form Recognizer"),
                        ],
                    )),
                ),
            ],
        ),
    )
    .await;
    assert_eq!(
        out,
        json!({
            "serp": ["SerpConnection", "serp-key"],
            "search": ["CognitiveSearchConnection", "https://s", "2023-11-01", "search-key"],
            "forms": ["FormRecognizerConnection", "https://f", "Form Recognizer", "2023-07-31"],
        })
    );
}
