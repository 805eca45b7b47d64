//! Tracing as a collector sees it: a batch with an llm node exports OTLP/HTTP JSON spans to the
//! endpoint in OTEL_EXPORTER_OTLP_ENDPOINT, one trace per line: the flow span, and under it the
//! node's LLM span with its token counts; the flow span carries the cumulative counts.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::server::Server;
use common::{collector, flow, s, write_jsonl, Env, FakeOpenAi, Run};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A trace's root span has no parent (OTLP/JSON writes its parent id empty).
fn is_root(span: &Value) -> bool {
    span["parentSpanId"].as_str().unwrap_or("").is_empty()
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[test]
fn a_batch_line_becomes_a_flow_span_with_its_llm_span_and_token_counts() {
    let model = FakeOpenAi::start(0);
    let (endpoint, got) = collector();
    let env = Env::new();
    env.connection(&format!(
        "name: test_openai\ntype: open_ai\napi_key: k\nbase_url: {}/v1\n",
        model.base
    ));
    let (d, dir) = flow("chat");
    let data = d.path().join("data.jsonl");
    write_jsonl(
        &data,
        &[json!({"question": "one"}), json!({"question": "two"})],
    );
    traced_batch(&env, &dir, &data, "traced", &endpoint);
    let bodies = got.lock().unwrap().clone();
    let spans: Vec<Value> = bodies
        .iter()
        .flat_map(|b| {
            b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        spans.len(),
        4,
        "two lines, a flow span and an LLM span each: {spans:#?}"
    );
    // The resource names the service and, as promptflow's viewer groups traces, the flow.
    let resource = &bodies[0]["resourceSpans"][0]["resource"];
    assert_eq!(
        attribute(resource, "service.name"),
        Some(&json!({"stringValue": "flowrt"}))
    );
    assert_eq!(
        attribute(resource, "collection"),
        Some(&json!({"stringValue": dir.file_name().unwrap().to_str().unwrap()}))
    );
    for line in [0, 1] {
        let of_line: Vec<&Value> = spans
            .iter()
            .filter(|s| attribute(s, "line_number") == Some(&json!({"intValue": line.to_string()})))
            .collect();
        assert_eq!(of_line.len(), 2, "line {line}");
        let root = of_line.iter().find(|s| is_root(s)).unwrap();
        let llm = of_line.iter().find(|s| !is_root(s)).unwrap();
        assert_eq!(llm["parentSpanId"], root["spanId"]);
        assert_eq!(llm["traceId"], root["traceId"]);
        assert_eq!(
            attribute(root, "span_type"),
            Some(&json!({"stringValue": "Flow"}))
        );
        assert_eq!(
            attribute(root, "batch_run_id"),
            Some(&json!({"stringValue": "traced"}))
        );
        assert_eq!(
            attribute(root, "line_run_id"),
            Some(&json!({"stringValue": format!("traced_{line}")}))
        );
        assert_eq!(
            attribute(llm, "span_type"),
            Some(&json!({"stringValue": "LLM"}))
        );
        assert_eq!(
            attribute(llm, "node_name"),
            Some(&json!({"stringValue": "chat"}))
        );
        assert_eq!(
            attribute(llm, "gen_ai.request.model"),
            Some(&json!({"stringValue": "fake-model"}))
        );
        // The fake model reports 5 prompt and 3 completion tokens a call.
        assert_eq!(
            attribute(llm, "llm.usage.prompt_tokens"),
            Some(&json!({"intValue": "5"}))
        );
        assert_eq!(
            attribute(llm, "llm.usage.completion_tokens"),
            Some(&json!({"intValue": "3"}))
        );
        assert_eq!(
            attribute(llm, "llm.usage.total_tokens"),
            Some(&json!({"intValue": "8"}))
        );
        assert_eq!(
            attribute(llm, "gen_ai.usage.input_tokens"),
            Some(&json!({"intValue": "5"}))
        );
        assert_eq!(
            attribute(root, "__computed__.cumulative_token_count.total"),
            Some(&json!({"intValue": "8"}))
        );
        assert_eq!(root["status"]["code"], 1);
        // Inputs and outputs travel as events.
        let events: Vec<&str> = root["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            events,
            ["promptflow.function.inputs", "promptflow.function.output"]
        );
        let start: u128 = root["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u128 = root["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(end >= start);
    }
}

#[test]
fn a_dead_trace_collector_costs_a_warning_not_the_line() {
    let model = FakeOpenAi::start(0);
    let env = Env::new();
    env.connection(&format!(
        "name: test_openai\ntype: open_ai\napi_key: k\nbase_url: {}/v1\n",
        model.base
    ));
    let (_d, dir) = flow("chat");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let r = env.run_with_env(
        &["flow", "test", s(&dir), "--inputs", "question=hi"],
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        )],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("cannot export traces"), "{}", r.stderr);
    assert_eq!(r.json()["answer"], "echo: hi");
}

/// `@trace`d Python functions become spans under their node (nested as they called each
/// other), with their inputs and output, in the export and in the run's line records.
#[test]
fn traced_python_functions_are_spans_under_their_node() {
    let (endpoint, got) = collector();
    let env = Env::new();
    let (_d, dir) = flow("traced");
    let data = dir.join("data.jsonl");
    write_jsonl(&data, &[json!({"x": 3})]);
    let out = dir.join("out");
    let r = env.run_with_env(
        &[
            "run",
            "create",
            "--flow",
            s(&dir),
            "--data",
            s(&data),
            "--column-mapping",
            "x=${data.x}",
            "--name",
            "traced",
            "--output-dir",
            s(&out),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let t = std::time::Instant::now();
    let spans: Vec<Value> = loop {
        let spans: Vec<Value> = got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        if spans.len() >= 4 || t.elapsed() > std::time::Duration::from_secs(10) {
            break spans;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let named = |n: &str| {
        spans
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("no span {n}: {spans:#?}"))
    };
    let node = named("calc");
    let plus = named("plus_one");
    let square = named("square");
    assert_eq!(plus["parentSpanId"], node["spanId"]);
    assert_eq!(
        square["parentSpanId"], plus["spanId"],
        "square was called by plus_one"
    );
    assert_eq!(
        attribute(square, "span_type").unwrap()["stringValue"],
        "Function"
    );
    let payload = |span: &Value, event: &str| {
        span["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == event)
            .map(|e| {
                e["attributes"][0]["value"]["stringValue"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .unwrap_or_default()
    };
    assert_eq!(payload(square, "promptflow.function.inputs"), r#"{"n":3}"#);
    assert_eq!(payload(square, "promptflow.function.output"), "9");
    assert_eq!(payload(plus, "promptflow.function.output"), "10");
    // The node's own span shows the inputs it was called with, and the function it called, as
    // promptflow's do.
    assert_eq!(payload(node, "promptflow.function.inputs"), r#"{"x":3}"#);
    assert_eq!(attribute(node, "function").unwrap()["stringValue"], "calc");
    assert_eq!(
        attribute(node, "input.value").unwrap()["stringValue"],
        r#"{"x":3}"#
    );
    // The line's record keeps them, for the UI's trace.
    let records = std::fs::read_to_string(out.join("line_runs.jsonl")).unwrap();
    let rec: Value = serde_json::from_str(records.lines().next().unwrap()).unwrap();
    let kept = &rec["nodes"][0]["spans"];
    assert_eq!(kept.as_array().map(Vec::len), Some(2), "{rec:#}");
}

/// A `flowrt server` whose OpenTelemetry variables name `endpoint` (OTLP/JSON), driven by a CLI
/// whose environment names no receiver ([`traced_cli`]): what arrives, the server sent.
fn traced_server(endpoint: &str) -> Server {
    Server::builder()
        .idle_check(None)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .start()
}

/// The CLI's output, through `server`, with no receiver of its own; it must succeed.
fn traced_cli(server: &Server, args: &[&str]) -> String {
    let out = Run::of(server.cmd(args).env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"));
    assert!(out.code == 0, "{args:?}: {}{}", out.stdout, out.stderr);
    out.stdout
}

/// Every span the collector got, with its resource's collection.
fn collected_spans(got: &Arc<Mutex<Vec<Value>>>) -> Vec<(String, Value)> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|body| {
            body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|rs| {
                    let collection = attribute(&rs["resource"], "collection")
                        .and_then(|v| v["stringValue"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    rs["scopeSpans"][0]["spans"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |span| (collection.clone(), span))
                })
        })
        .collect()
}

/// Runs in sessions record their lines' spans, and the server exports them with its own
/// OpenTelemetry settings (the sessions know none): a test in a session, a batch in it and an
/// evaluation of that batch in a second session reach the receiver named on the server, in the
/// workspace flow's collection, with the batch's and the base run's names; the run keeps them.
#[test]
fn a_server_exports_the_spans_its_sessions_record() {
    let (endpoint, got) = collector();
    let server = traced_server(&endpoint);
    let (home, url) = (server.home(), &server.url);
    let cli = |args: &[&str]| traced_cli(&server, args);
    let (d, base_flow) = flow("batch_base");
    let (_e, eval_flow) = flow("batch_eval");
    let base_session = cli(&[
        "session",
        "start",
        "--flow",
        s(&base_flow),
        "--idle-timeout",
        "0",
    ]);
    let base_session = base_session.lines().last().unwrap().trim().to_string();
    let eval_session = cli(&[
        "session",
        "start",
        "--flow",
        s(&eval_flow),
        "--idle-timeout",
        "0",
    ]);
    let eval_session = eval_session.lines().last().unwrap().trim().to_string();
    cli(&[
        "flow",
        "test",
        "batch_base",
        "--session",
        &base_session,
        "--inputs",
        "q=tested",
    ]);
    // The same as the web UI's test pane asks it: streamed. Its result reaches the client
    // without the spans, which the server exported.
    let token = std::fs::read_to_string(home.join("owner.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let r = common::http::request(
        "POST",
        &format!("{url}/api/v1/sessions/{base_session}/test"),
        &[
            ("authorization", &auth),
            ("accept", "text/event-stream"),
            ("content-type", "application/json"),
        ],
        r#"{"inputs": {"q": "streamed"}}"#,
    );
    let (status, events) = (r.status, r.text);
    assert_eq!(status, 200, "{events}");
    assert!(events.contains("event: result"), "{events}");
    assert!(events.contains("STREAMED"), "{events}");
    assert!(!events.contains("\"spans\""), "{events}");
    let data = d.path().join("data.jsonl");
    write_jsonl(
        &data,
        &(0..5)
            .map(|i| json!({"q": format!("q{i}")}))
            .collect::<Vec<_>>(),
    );
    cli(&[
        "run",
        "create",
        "--session",
        &base_session,
        "--data",
        s(&data),
        "--column-mapping",
        "q=${data.q}",
        "--name",
        "traced-base",
    ]);
    cli(&[
        "run",
        "create",
        "--session",
        &eval_session,
        "--data",
        s(&data),
        "--run",
        "traced-base",
        "--column-mapping",
        "answer=${run.outputs.answer}",
        "--column-mapping",
        "expected=${data.q}",
        "--column-mapping",
        "source=${data.q}",
        "--name",
        "traced-eval",
    ]);
    let collected = || collected_spans(&got);
    let roots = |spans: &[(String, Value)], run: Option<&str>| -> Vec<(String, Value)> {
        spans
            .iter()
            .filter(|(_, s)| is_root(s) && !is_aggregation(s))
            .filter(|(_, s)| {
                attribute(s, "batch_run_id").and_then(|v| v["stringValue"].as_str()) == run
            })
            .cloned()
            .collect()
    };
    // A run's spans are sent when it ends, before it says so: no waiting for the batches'.
    let spans = collected();
    assert_eq!(roots(&spans, Some("traced-base")).len(), 5, "{spans:#?}");
    assert_eq!(roots(&spans, Some("traced-eval")).len(), 5, "{spans:#?}");
    // The tests' (answered whole and streamed) leave within a second.
    let t = std::time::Instant::now();
    let spans = loop {
        let spans = collected();
        if roots(&spans, None).len() == 2 || t.elapsed() > std::time::Duration::from_secs(10) {
            break spans;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let tested = roots(&spans, None);
    assert_eq!(tested.len(), 2, "the tests' flow spans: {spans:#?}");
    for (collection, span) in &tested {
        assert_eq!(collection, "batch_base", "named by the workspace flow");
        assert_eq!(span["status"]["code"], 1);
    }
    let base = roots(&spans, Some("traced-base"));
    assert_eq!(base.len(), 5, "{spans:#?}");
    for (collection, span) in &base {
        assert_eq!(collection, "batch_base");
        assert_eq!(
            span["name"], "batch_base",
            "the flow span is named by the workspace flow"
        );
        assert_eq!(span["status"]["code"], 1);
    }
    let eval = roots(&spans, Some("traced-eval"));
    assert_eq!(eval.len(), 5, "{spans:#?}");
    let mut numbers: Vec<String> = Vec::new();
    for (collection, span) in &eval {
        assert_eq!(collection, "batch_eval");
        assert_eq!(
            attribute(span, "referenced.batch_run_id"),
            Some(&json!({"stringValue": "traced-base"}))
        );
        numbers.push(attribute(span, "line_number").unwrap()["intValue"].to_string());
    }
    numbers.sort();
    assert_eq!(numbers, ["\"0\"", "\"1\"", "\"2\"", "\"3\"", "\"4\""]);
    // The evaluation's aggregation node is a span of the run, recorded in the session too.
    let aggregated: Vec<&(String, Value)> =
        spans.iter().filter(|(_, s)| is_aggregation(s)).collect();
    assert_eq!(aggregated.len(), 1, "{spans:#?}");
    let (collection, score) = aggregated[0];
    assert_eq!(collection, "batch_eval");
    assert_eq!(score["name"], "score");
    assert_eq!(
        attribute(score, "batch_run_id"),
        Some(&json!({"stringValue": "traced-eval"}))
    );
    assert_eq!(
        attribute(score, "referenced.batch_run_id"),
        Some(&json!({"stringValue": "traced-base"}))
    );
    // The workspace keeps them with the run, whatever becomes of the session.
    let kept =
        std::fs::read_to_string(home.join("workspace/runs/traced-base/spans.jsonl")).unwrap();
    assert_eq!(kept.lines().count(), 5);
    let kept =
        std::fs::read_to_string(home.join("workspace/runs/traced-eval/spans.jsonl")).unwrap();
    assert_eq!(kept.lines().count(), 6, "five lines and the aggregation");
}

/// `run create` of `dir` over `data`, exporting to `endpoint` as OTLP/JSON; it must succeed.
fn traced_batch(env: &Env, dir: &Path, data: &Path, name: &str, endpoint: &str) {
    traced_batch_with(env, dir, data, name, endpoint, &[]);
}

/// [`traced_batch`] with more arguments to `run create` (a column mapping).
fn traced_batch_with(
    env: &Env,
    dir: &Path,
    data: &Path,
    name: &str,
    endpoint: &str,
    more: &[&str],
) {
    let mut args = vec![
        "run",
        "create",
        "--flow",
        s(dir),
        "--data",
        s(data),
        "--name",
        name,
    ];
    args.extend_from_slice(more);
    let r = env.run_with_env(
        &args,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

fn is_aggregation(span: &Value) -> bool {
    attribute(span, "is_aggregation") == Some(&json!({"boolValue": true}))
}

/// A batch run's aggregation node is a span of its own, as promptflow's: the root of its trace,
/// the run's (no line's), with the lists it aggregated as its inputs and its result.
#[test]
fn an_aggregation_node_is_a_span_of_the_run() {
    let (endpoint, got) = collector();
    let env = Env::new();
    let (d, dir) = flow("batch_eval");
    let data = d.path().join("data.jsonl");
    write_jsonl(
        &data,
        &[
            json!({"answer": "a", "expected": "a", "source": "s0"}),
            json!({"answer": "b", "expected": "c", "source": "s1"}),
        ],
    );
    traced_batch(&env, &dir, &data, "graded", &endpoint);
    let spans = collected_spans(&got);
    let aggregated: Vec<&Value> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| is_aggregation(s))
        .collect();
    assert_eq!(aggregated.len(), 1, "{spans:#?}");
    let score = aggregated[0];
    assert!(is_root(score), "{score:#}");
    assert_eq!(score["name"], "score");
    assert_eq!(score["status"]["code"], 1);
    assert_eq!(
        attribute(score, "batch_run_id"),
        Some(&json!({"stringValue": "graded"}))
    );
    assert_eq!(attribute(score, "line_run_id"), None, "no line's");
    let lines: Vec<&Value> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| is_root(s) && !is_aggregation(s))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_ne!(score["traceId"], lines[0]["traceId"], "a trace of its own");
    let inputs: Value = serde_json::from_str(
        attribute(score, "input.value").unwrap()["stringValue"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        inputs["grades"].as_array().map(Vec::len),
        Some(2),
        "{inputs}"
    );
    assert_eq!(
        attribute(score, "output.value"),
        Some(&json!({"stringValue": "0.5"}))
    );
}

/// A node its activate condition bypasses runs no tool, so it has no span, as in promptflow
/// (whose spans come from the tool call); its line's other nodes have theirs.
#[test]
fn a_bypassed_node_has_no_span() {
    let (endpoint, got) = collector();
    let env = Env::new();
    let (d, dir) = flow("pipeline");
    let data = d.path().join("data.jsonl");
    write_jsonl(
        &data,
        &[
            json!({"text": "quiet words here", "loud": false}),
            json!({"text": "loud words here", "loud": true}),
        ],
    );
    // `loud` has a default, which wins over a column of its name unless it is mapped.
    traced_batch_with(
        &env,
        &dir,
        &data,
        "bypassing",
        &endpoint,
        &[
            "--column-mapping",
            "text=${data.text}",
            "--column-mapping",
            "loud=${data.loud}",
        ],
    );
    let spans = collected_spans(&got);
    let nodes_of = |line: u64| -> Vec<String> {
        let mut nodes: Vec<String> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| !is_root(s))
            .filter(|s| attribute(s, "line_number") == Some(&json!({"intValue": line.to_string()})))
            .filter_map(|s| {
                attribute(s, "node_name")?["stringValue"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        nodes.sort();
        nodes
    };
    assert_eq!(nodes_of(0), ["repeat", "stats", "summary"], "{spans:#?}");
    assert_eq!(
        nodes_of(1),
        ["repeat", "shout", "stats", "summary"],
        "{spans:#?}"
    );
}

/// Spans the flow's code makes with the OpenTelemetry API (as instrumented libraries do) nest
/// under their node's span as they were started, with their attributes, and a `@trace`d
/// function called inside one nests under it; one that raised is an error.
#[test]
fn spans_made_with_the_opentelemetry_api_nest_under_their_node() {
    let (endpoint, got) = collector();
    let env = Env::new();
    let (d, dir) = flow("otel_api");
    let data = d.path().join("data.jsonl");
    write_jsonl(&data, &[json!({"x": 4})]);
    let r = env.run_with_env(
        &[
            "run",
            "create",
            "--flow",
            s(&dir),
            "--data",
            s(&data),
            "--column-mapping",
            "x=${data.x}",
            "--name",
            "otel-api",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let spans: Vec<Value> = got
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let named = |n: &str| {
        spans
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("no span {n}: {spans:#?}"))
    };
    let (node, outer, inner, double, fails) = (
        named("compute"),
        named("outer"),
        named("inner"),
        named("double"),
        named("fails"),
    );
    assert_eq!(outer["parentSpanId"], node["spanId"]);
    assert_eq!(inner["parentSpanId"], outer["spanId"]);
    assert_eq!(
        double["parentSpanId"], inner["spanId"],
        "@trace inside a current span"
    );
    assert_eq!(fails["parentSpanId"], node["spanId"]);
    assert_eq!(
        attribute(outer, "step"),
        Some(&json!({"stringValue": "one"}))
    );
    assert_eq!(attribute(inner, "x"), Some(&json!({"intValue": "4"})));
    assert_eq!(inner["status"]["code"], 1);
    assert_eq!(fails["status"]["code"], 2, "{fails:#}");
    assert!(
        fails["status"]["message"]
            .as_str()
            .unwrap()
            .contains("on purpose"),
        "{fails:#}"
    );
}

/// A receiver that accepts connections and never answers (a hung collector) changes no line's
/// result and holds no line up: the lines of a 400-line batch take no more than 1 ms each more
/// than with a receiver that answers at once (measured from the lines' own records, first start
/// to last end; the run then waits a bounded few seconds for its queued spans, once).
#[test]
fn a_hung_trace_receiver_changes_no_result_and_holds_no_line_up() {
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hung.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in hung.incoming().flatten() {
            keep.lock().unwrap().push(stream); // read nothing, answer nothing
        }
    });
    let env = Env::new();
    let (d, dir) = flow("batch_base");
    let data = d.path().join("data.jsonl");
    let lines = 400;
    write_jsonl(
        &data,
        &(0..lines)
            .map(|i| json!({"q": format!("q{i}")}))
            .collect::<Vec<_>>(),
    );
    // Lines' span of a run's records: from the first node's start to the last node's end.
    let run = |name: &str, vars: &[(&str, &str)]| -> (Vec<Value>, f64) {
        let out = d.path().join(name);
        let mut args = vec![
            "run",
            "create",
            "--flow",
            s(&dir),
            "--data",
            s(&data),
            "--column-mapping",
            "q=${data.q}",
            "--name",
            name,
            "--output-dir",
            s(&out),
        ];
        args.retain(|a| !a.is_empty());
        let r = env.run_with_env(&args, vars);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let outputs: Vec<Value> = std::fs::read_to_string(out.join("flow_outputs/output.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (mut first, mut last) = (f64::MAX, 0f64);
        for l in std::fs::read_to_string(out.join("line_runs.jsonl"))
            .unwrap()
            .lines()
        {
            let rec: Value = serde_json::from_str(l).unwrap();
            for node in rec["nodes"].as_array().unwrap() {
                let start = node["start"].as_f64().unwrap();
                first = first.min(start);
                last = last.max(start + node["duration"].as_f64().unwrap());
            }
        }
        (outputs, last - first)
    };
    let (healthy, _) = collector();
    let (plain, plain_span) = run("healthy", &[("OTEL_EXPORTER_OTLP_ENDPOINT", &healthy)]);
    let (traced, traced_span) = run("hung", &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    assert_eq!(traced, plain, "the same results");
    assert_eq!(traced.len(), lines);
    assert!(
        !held.lock().unwrap().is_empty(),
        "the exporter did try the receiver"
    );
    let per_line_ms = (traced_span - plain_span) * 1000.0 / lines as f64;
    eprintln!("lines took {plain_span:.3} s with a receiver that answers, {traced_span:.3} s with a hung one: {per_line_ms:+.3} ms a line");
    assert!(
        per_line_ms < 1.0,
        "a hung receiver added {per_line_ms:.3} ms a line ({plain_span:.3} s -> {traced_span:.3} s)"
    );
}

/// A session's code can write into its runs' folders, `spans.jsonl` included: spans it forges
/// there reach the server, which exports them only as what its own record says they are (this
/// flow's collection, this run), never as another flow's or another run's.
#[test]
fn spans_a_session_forges_are_exported_as_its_own_run_s() {
    let (endpoint, got) = collector();
    let server = traced_server(&endpoint);
    let (d, dir) = flow("span_forger");
    let session = traced_cli(
        &server,
        &["session", "start", "--flow", s(&dir), "--idle-timeout", "0"],
    );
    let session = session.lines().last().unwrap().trim().to_string();
    let data = d.path().join("data.jsonl");
    write_jsonl(&data, &(0..3).map(|i| json!({"x": i})).collect::<Vec<_>>());
    traced_cli(
        &server,
        &[
            "run",
            "create",
            "--session",
            &session,
            "--data",
            s(&data),
            "--column-mapping",
            "x=${data.x}",
            "--name",
            "forger-run",
        ],
    );
    // The forgery did reach the server with the run's spans.
    let kept = std::fs::read_to_string(server.home().join("workspace/runs/forger-run/spans.jsonl"))
        .unwrap();
    assert!(kept.contains("victim-run"), "{kept}");
    let spans = collected_spans(&got);
    let forged: Vec<&(String, Value)> = spans
        .iter()
        .filter(|(_, s)| s["name"] == "forged")
        .collect();
    assert!(!forged.is_empty(), "{spans:#?}");
    for (collection, span) in &spans {
        assert_eq!(collection, "span_forger", "{span:#}");
        assert_eq!(
            attribute(span, "batch_run_id"),
            Some(&json!({"stringValue": "forger-run"})),
            "{span:#}"
        );
        assert_eq!(attribute(span, "referenced.batch_run_id"), None, "{span:#}");
    }
}
