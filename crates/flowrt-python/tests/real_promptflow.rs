//! The worker with the real `promptflow` package installed by a flow's requirements (its classes
//! win over flowrt's compatibility package). Builds the environment with `ensure_env`, as a flow
//! with `promptflow-core` in its requirements.txt would get it.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_api::{Connection, ConnectionKind};
use flowrt_python::{
    ensure_env, Arg, EnvRequest, Output, ToolCall, ToolSource, WorkerPool, WorkerSpec,
};
use serde_json::{json, Value};
use std::path::PathBuf;

/// An environment with the real promptflow-core, built once per test run under `home`.
fn pf_python(home: &std::path::Path) -> PathBuf {
    let req = home.join("requirements.txt");
    std::fs::write(&req, "promptflow-core==1.18.5\n").unwrap();
    ensure_env(
        EnvRequest {
            requirements: Some(&req),
            flowrt_home: home,
        },
        &mut |m| eprintln!("{m}"),
    )
    .unwrap_or_else(|e| panic!("building an environment with promptflow-core: {e}"))
}

fn call(node: &str, path: &str, args: Vec<(&str, Arg)>) -> ToolCall {
    ToolCall {
        node: node.into(),
        source: ToolSource::Code { path: path.into() },
        args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        timeout: None,
    }
}

#[tokio::test]
async fn works_with_real_promptflow() {
    let state = tempfile::tempdir().unwrap();
    let python = pf_python(state.path());
    let pool = WorkerPool::new(
        WorkerSpec {
            python,
            flow_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
            env: vec![],
            state_dir: state.path().to_path_buf(),
        },
        1,
    );
    let out = pool
        .call(call("which", "which_promptflow.py", vec![]))
        .await
        .unwrap();
    let Output::Value(v) = out.output else {
        panic!()
    };
    assert!(v.as_str().unwrap().contains("site-packages"), "{v}");

    let out = pool
        .call(call(
            "echo",
            "echo.py",
            vec![("text", Arg::Value(json!("hi")))],
        ))
        .await
        .unwrap();
    assert_eq!(out.output, Output::Value(json!("hi!")));

    let out = pool
        .call(call(
            "a",
            "counter_cls.py",
            vec![
                ("start", Arg::Literal(json!("2"))),
                ("text", Arg::Value(json!("x"))),
            ],
        ))
        .await
        .unwrap();
    let Output::Value(v) = out.output else {
        panic!()
    };
    assert_eq!(v["start"], json!(2));

    let out = pool
        .call(call(
            "agg",
            "metrics_tool.py",
            vec![("values", Arg::Value(json!([1, 2, 3])))],
        ))
        .await
        .unwrap();
    assert_eq!(out.metrics.len(), 3, "{:?}", out.metrics);
    assert_eq!(out.metrics[0], ("count".to_string(), json!(3)));

    let conn = Connection {
        name: "custom_conn".into(),
        kind: ConnectionKind::Custom,
        configs: [
            ("region".to_string(), "eu".to_string()),
            ("tier".to_string(), "gold".to_string()),
        ]
        .into_iter()
        .collect(),
        secrets: [
            ("api_key".to_string(), "k".to_string()),
            ("token".to_string(), "t".to_string()),
        ]
        .into_iter()
        .collect(),
    };
    let aoai = Connection {
        name: "aoai".into(),
        kind: ConnectionKind::AzureOpenAi,
        configs: [("api_base".to_string(), "http://x".to_string())]
            .into_iter()
            .collect(),
        secrets: [("api_key".to_string(), "k2".to_string())]
            .into_iter()
            .collect(),
    };
    let out = pool
        .call(call(
            "c",
            "conn_tool.py",
            vec![
                ("conn", Arg::Connection(conn.clone())),
                ("other", Arg::Connection(aoai)),
                ("plain", Arg::Connection(conn)),
            ],
        ))
        .await
        .unwrap();
    let Output::Value(v) = out.output else {
        panic!()
    };
    assert_eq!(v["tier_attr"], json!("gold"));
    assert_eq!(v["token_attr"], json!("t"));
    assert_eq!(v["other_type"], json!("AzureOpenAIConnection"));
    assert_eq!(v["plain"], json!("custom_conn"));

    let out = pool
        .call(call(
            "g",
            "gen_tool.py",
            vec![("words", Arg::Value(json!(["a"])))],
        ))
        .await
        .unwrap();
    assert!(
        matches!(out.output, Output::Generator { ref joined, .. } if joined == "0:a None3"),
        "{:?}",
        out.output
    );

    let out = pool
        .call(call(
            "as",
            "async_tool.py",
            vec![
                ("text", Arg::Value(json!("ab"))),
                ("delay_ms", Arg::Literal(json!(1))),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(out.output, Output::Value(Value::from("AB")));
    assert!(out.stdout.contains("async done ab"));

    let err = pool
        .call(call(
            "p",
            "plain_cls.py",
            vec![("text", Arg::Value(json!("x")))],
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NoToolDefined"), "{err}");
    pool.shutdown().await;
}
