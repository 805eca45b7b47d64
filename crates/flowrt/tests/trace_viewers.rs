//! flowrt's spans where teams already look, read back through each viewer's own API:
//!
//! - promptflow 1.18.5's trace service (`pf service start`, what `start_trace()` opens) receives
//!   OTLP/HTTP protobuf from a flow test, a 20-line batch and an evaluation over it, and shows
//!   each line with its inputs, outputs, status and token counts, the batch's lines under their
//!   run, and each evaluation line attached to the base run's line of the same number;
//! - Arize Phoenix shows the same test and batch as traces of the project the resource names:
//!   the flow span with its input and output, the LLM span under it with its token counts.
//!
//! Needs venvs with promptflow-devkit 1.18.5 and arize-phoenix: `./scripts/test.sh` installs
//! them and names them in FLOWRT_TEST_PF_VENV and FLOWRT_TEST_PHOENIX_VENV.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::{flow, free_port, s, write_jsonl, Env, FakeOpenAi};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// promptflow's trace service on 127.0.0.1, in a home of its own; stopped when dropped.
struct TraceService {
    venv: PathBuf,
    home: tempfile::TempDir,
    base: String,
}

impl TraceService {
    fn start(venv: &Path) -> TraceService {
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let service = TraceService {
            venv: venv.to_path_buf(),
            home,
            base: format!("http://127.0.0.1:{port}"),
        };
        // Telemetry off: the service would try to reach Azure.
        let config = service.pf(&["config", "set", "telemetry.enabled=false"]);
        assert!(
            config.status.success(),
            "{}",
            String::from_utf8_lossy(&config.stderr)
        );
        // Its detached server inherits stdout and stderr: they go to files, not pipes this
        // test would wait on.
        let log = std::fs::File::create(service.home.path().join("start.log")).unwrap();
        let started = Command::new(venv.join("bin/pf"))
            .args(["service", "start", "--port", &port.to_string()])
            .envs(service.vars())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap();
        let t = Instant::now();
        while get(&format!("{}/heartbeat", service.base)).0 != 200 {
            assert!(
                started.success() && t.elapsed() < Duration::from_secs(60),
                "promptflow's trace service did not start: {}",
                std::fs::read_to_string(service.home.path().join("start.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        service
    }

    fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("HOME".into(), self.home.path().display().to_string()),
            ("PF_DISABLE_TRACING".into(), "false".into()),
            (
                "PATH".into(),
                format!("{}:/usr/bin:/bin", self.venv.join("bin").display()),
            ),
        ]
    }

    fn pf(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.venv.join("bin/pf"))
            .args(args)
            .envs(self.vars())
            .output()
            .unwrap()
    }

    /// `GET /v1.0/LineRuns/list?QUERY`, waiting until it lists `count` line runs.
    fn line_runs(&self, query: &str, count: usize) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let (status, body) = get(&format!("{}/v1.0/LineRuns/list?{query}", self.base));
            let runs: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
            if status == 200 && runs.len() >= count {
                return runs;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{query}: {count} line runs expected, the service lists {}: {body}",
                runs.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn spans(&self, trace_id: &str) -> Vec<Value> {
        let (status, body) = get(&format!(
            "{}/v1.0/Spans/list?trace_ids={trace_id}&lazy_load=false",
            self.base
        ));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for TraceService {
    fn drop(&mut self) {
        let _ = self.pf(&["service", "stop"]);
    }
}

/// `GET url`: its status and body, `(0, "")` while nothing listens there.
fn get(url: &str) -> (u16, String) {
    match common::http::try_request("GET", url, &[], "") {
        Ok(r) => (r.status, r.text),
        Err(_) => (0, String::new()),
    }
}

/// The venv named in `var`; `None` (the test is skipped) outside CI when it is not set.
fn venv(var: &str, package: &str) -> Option<PathBuf> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{var} is not set; run the tests with ./scripts/test.sh, which installs {package}"
        ),
        _ => {
            eprintln!("skipped: {var} (a venv with {package}) is not set");
            None
        }
    }
}

#[test]
fn promptflow_trace_service_shows_a_test_a_batch_and_its_evaluation() {
    let Some(venv) = venv("FLOWRT_TEST_PF_VENV", "promptflow-devkit") else {
        return;
    };
    let service = TraceService::start(&venv);
    let model = FakeOpenAi::start(0);
    let env = Env::new();
    env.connection(&format!(
        "name: test_openai\ntype: open_ai\napi_key: k\nbase_url: {}/v1\n",
        model.base
    ));
    let endpoint = format!("{}/v1/traces", service.base);
    let otel = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str())];
    let (d, chat) = flow("chat");
    let collection = chat.file_name().unwrap().to_str().unwrap().to_string();

    // A flow test: one line run in the flow's collection, with its inputs, outputs and tokens.
    let r = env.run_with_env(
        &["flow", "test", s(&chat), "--inputs", "question=hello"],
        &otel,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let tested = service.line_runs(&format!("collection={collection}"), 1);
    assert_eq!(tested.len(), 1, "{tested:#?}");
    let line = &tested[0];
    assert_eq!(line["status"], "Ok", "{line:#}");
    assert_eq!(line["kind"], "Flow");
    assert_eq!(line["name"], collection);
    assert_eq!(line["inputs"]["question"], "hello");
    assert_eq!(line["outputs"]["answer"], "echo: hello");
    let tokens = &line["cumulative_token_count"];
    assert!(tokens["total"].as_u64().unwrap() > 0, "{line:#}");
    assert_eq!(
        tokens["total"].as_u64(),
        Some(tokens["prompt"].as_u64().unwrap() + tokens["completion"].as_u64().unwrap())
    );
    // Its spans: the flow, and the LLM node under it with its own counts.
    let spans = service.spans(line["trace_id"].as_str().unwrap());
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let root = spans.iter().find(|s| s["parent_id"].is_null()).unwrap();
    let llm = spans.iter().find(|s| !s["parent_id"].is_null()).unwrap();
    assert_eq!(llm["parent_id"], root["context"]["span_id"]);
    assert_eq!(llm["attributes"]["span_type"], "LLM");
    assert_eq!(llm["attributes"]["node_name"], "chat");
    assert_eq!(llm["status"]["status_code"], "Ok");

    // A 20-line batch: its lines under its run, each with its line's inputs and outputs.
    let data = d.path().join("data.jsonl");
    let rows: Vec<Value> = (0..20)
        .map(|i| json!({"question": format!("q{i}"), "expected": if i % 4 == 0 { "wrong".to_string() } else { format!("echo: q{i}") }}))
        .collect();
    write_jsonl(&data, &rows);
    let r = env.run_with_env(
        &[
            "run",
            "create",
            "--flow",
            s(&chat),
            "--data",
            s(&data),
            "--name",
            "base-run",
        ],
        &otel,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let base = service.line_runs("run=base-run", 20);
    assert_eq!(base.len(), 20);
    for line in &base {
        let n = line["inputs"]["line_number"].as_u64().unwrap();
        assert_eq!(line["inputs"]["question"], format!("q{n}"), "{line:#}");
        assert_eq!(line["outputs"]["answer"], format!("echo: q{n}"));
        assert_eq!(line["status"], "Ok");
        assert!(line["cumulative_token_count"]["total"].as_u64().unwrap() > 0);
    }

    // An evaluation over it: each of its lines attached to the base line of its number.
    let (_e, eval) = flow("batch_eval");
    let r = env.run_with_env(
        &[
            "run",
            "create",
            "--flow",
            s(&eval),
            "--data",
            s(&data),
            "--run",
            "base-run",
            "--column-mapping",
            "answer=${run.outputs.answer}",
            "--column-mapping",
            "expected=${data.expected}",
            "--column-mapping",
            "source=${data.question}",
            "--name",
            "eval-run",
        ],
        &otel,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    service.line_runs("run=eval-run", 20);
    let base = service.line_runs("run=base-run", 20);
    for line in &base {
        let n = line["inputs"]["line_number"].as_u64().unwrap();
        let evaluation = &line["evaluations"]["eval-run"];
        assert_eq!(evaluation["line_number"], n, "line {n}: {line:#}");
        assert_eq!(evaluation["run"], "eval-run");
        assert_eq!(
            evaluation["outputs"]["grade"]["correct"],
            n % 4 != 0,
            "line {n}: {evaluation:#}"
        );
    }
}

/// Arize Phoenix on 127.0.0.1, its database in a folder of its own; killed when dropped.
struct Phoenix {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    base: String,
}

impl Phoenix {
    fn start(venv: &Path) -> Phoenix {
        let dir = tempfile::tempdir().unwrap();
        let (port, grpc) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("phoenix.log")).unwrap();
        let child = Command::new(venv.join("bin/phoenix"))
            .arg("serve")
            .env("PHOENIX_WORKING_DIR", dir.path().join("work"))
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            .env("PHOENIX_GRPC_PORT", grpc.to_string())
            // Nothing to fetch from outside (the machine may have no route there).
            .env("PHOENIX_ALLOW_EXTERNAL_RESOURCES", "false")
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let phoenix = Phoenix {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let t = Instant::now();
        while get(&format!("{}/healthz", phoenix.base)).0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "Phoenix did not start: {}",
                std::fs::read_to_string(phoenix._dir.path().join("phoenix.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        phoenix
    }

    /// Every span of `project`, through `GET /v1/projects/{project}/spans`, once `count` are
    /// there.
    fn spans(&self, project: &str, count: usize) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut url = format!("{}/v1/projects/{project}/spans?limit=500", self.base);
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let (status, body) = get(&url);
                if status != 200 {
                    break;
                }
                let page: Value = serde_json::from_str(&body).unwrap();
                all.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            if all.len() >= count {
                return all;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{count} spans expected in Phoenix's project {project}, it has {}: {all:#?}",
                all.len()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn phoenix_shows_a_test_and_a_batch_with_their_inputs_outputs_and_tokens() {
    let Some(venv) = venv("FLOWRT_TEST_PHOENIX_VENV", "arize-phoenix") else {
        return;
    };
    let phoenix = Phoenix::start(&venv);
    let model = FakeOpenAi::start(0);
    let env = Env::new();
    env.connection(&format!(
        "name: test_openai\ntype: open_ai\napi_key: k\nbase_url: {}/v1\n",
        model.base
    ));
    let endpoint = format!("{}/v1/traces", phoenix.base);
    let otel = [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
        // Phoenix files traces under the project the resource names.
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "openinference.project.name=flowrt-test",
        ),
    ];
    let (d, chat) = flow("chat");
    let r = env.run_with_env(
        &["flow", "test", s(&chat), "--inputs", "question=hello"],
        &otel,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let data = d.path().join("data.jsonl");
    let rows: Vec<Value> = (0..20)
        .map(|i| json!({"question": format!("q{i}")}))
        .collect();
    write_jsonl(&data, &rows);
    let r = env.run_with_env(
        &[
            "run",
            "create",
            "--flow",
            s(&chat),
            "--data",
            s(&data),
            "--name",
            "phoenix-base",
        ],
        &otel,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A flow span and an LLM span for each of 21 lines.
    let spans = phoenix.spans("flowrt-test", 42);
    assert_eq!(spans.len(), 42, "{spans:#?}");
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parent_id"].is_null()).collect();
    assert_eq!(roots.len(), 21);
    let mut batch_lines = Vec::new();
    for root in &roots {
        let a = &root["attributes"];
        assert_eq!(root["status_code"], "OK", "{root:#}");
        assert_eq!(root["span_kind"], "CHAIN", "{root:#}");
        let input: Value = serde_json::from_str(a["input.value"].as_str().unwrap()).unwrap();
        let output: Value = serde_json::from_str(a["output.value"].as_str().unwrap()).unwrap();
        let question = input["question"].as_str().unwrap();
        assert_eq!(output["answer"], format!("echo: {question}"), "{root:#}");
        assert_eq!(a["llm.token_count.total"], 8);
        if a["batch_run_id"] == "phoenix-base" {
            batch_lines.push(a["line_number"].as_u64().unwrap());
            assert_eq!(question, format!("q{}", a["line_number"]));
        } else {
            assert_eq!(question, "hello");
        }
        // Its LLM span, under it in its trace.
        let llm: Vec<&Value> = spans
            .iter()
            .filter(|s| s["parent_id"] == root["context"]["span_id"])
            .collect();
        assert_eq!(llm.len(), 1, "{root:#}");
        assert_eq!(llm[0]["context"]["trace_id"], root["context"]["trace_id"]);
        assert_eq!(llm[0]["span_kind"], "LLM", "{:#}", llm[0]);
        assert_eq!(llm[0]["attributes"]["llm.model_name"], "fake-model");
        assert_eq!(llm[0]["attributes"]["llm.token_count.prompt"], 5);
        assert_eq!(llm[0]["attributes"]["llm.token_count.completion"], 3);
    }
    batch_lines.sort();
    assert_eq!(batch_lines, (0..20).collect::<Vec<u64>>());
}
