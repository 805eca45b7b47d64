//! Endpoints and deployments, as a team uses them: a real server on 127.0.0.1, flows pushed and
//! deployed through the CLI, scored over HTTP with keys and tokens, under load while a
//! deployment moves to another version and while one of its instances is killed.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::server::{kill_session, Server};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Scoring, which only this suite does.
trait Score {
    fn score(&self, name: &str, auth: Option<&str>, body: &str) -> (u16, String, Value);
}

impl Score for Server {
    /// `POST /endpoints/NAME/score` with `auth` (a whole Authorization value, or none):
    /// status, the deployment that answered, the body.
    fn score(&self, name: &str, auth: Option<&str>, body: &str) -> (u16, String, Value) {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let r = http::request(
            "POST",
            &format!("{}/endpoints/{name}/score", self.url),
            &headers,
            body,
        );
        (
            r.status,
            r.header("azureml-model-deployment").trim().to_string(),
            serde_json::from_str(&r.text).unwrap_or(Value::String(r.text)),
        )
    }
}

/// A copy of `flows/deploy_echo` answering `version`.
fn echo_flow(dir: &Path, version: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flows/deploy_echo");
    let dst = dir.join(format!("deploy_echo_{version}"));
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("flow.dag.yaml"), dst.join("flow.dag.yaml")).unwrap();
    let code = std::fs::read_to_string(src.join("answer.py"))
        .unwrap()
        .replace("\"v1\"", &format!("\"{version}\""));
    std::fs::write(dst.join("answer.py"), code).unwrap();
    dst
}

/// Push `flows/deploy_echo` answering `version` as the workspace flow `echo`.
fn push_echo(server: &Server, version: &str) {
    let work = tempfile::tempdir().unwrap();
    server.ok(&[
        "flow",
        "push",
        s(&echo_flow(work.path(), version)),
        "--name",
        "echo",
    ]);
}

/// Create endpoint `name`; its primary key.
fn endpoint_key(server: &Server, name: &str) -> String {
    keys_of(&server.ok(&["endpoint", "create", name, "--json"]).json()).0
}

fn keys_of(created: &Value) -> (String, String) {
    (
        created["keys"]["primary"].as_str().unwrap().to_string(),
        created["keys"]["secondary"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_flow_version_is_deployed_scored_split_rotated_and_deleted() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start(0);
    let conn = |key: &str| {
        let file = work.path().join("conn.yaml");
        std::fs::write(
            &file,
            format!(
                "name: test_openai\ntype: open_ai\napi_key: {key}\nbase_url: {}/v1\n",
                fake.base
            ),
        )
        .unwrap();
        server.ok(&["connection", "create", "--workspace", "--file", s(&file)]);
    };
    conn("key-one");
    let (_chat_dir, chat) = flow("chat");
    server.ok(&["flow", "push", s(&chat), "--name", "chat"]);
    // v2 of the flow: another system prompt, the same answers.
    let template = chat.join("chat.jinja2");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, format!("{{# v2 #}}\n{text}")).unwrap();
    server.ok(&["flow", "push", s(&chat), "--name", "chat"]);

    let created = server
        .ok(&["endpoint", "create", "support", "--json"])
        .json();
    let (key, secondary) = keys_of(&created);
    assert!(key.starts_with("fre_") && key != secondary);
    let other_key = endpoint_key(&server, "other");
    // Only the keys' hashes are kept.
    assert!(files_holding(server.home(), &key).is_empty());

    let deployed = server.ok(&[
        "deployment",
        "create",
        "support/blue",
        "--flow",
        "chat@v1",
        "--instances",
        "2",
    ]);
    assert!(
        deployed.stderr.contains("Succeeded (2/2 ready)"),
        "{}",
        deployed.stderr
    );

    let bearer = format!("Bearer {key}");
    let (status, by, body) = server.score("support", Some(&bearer), r#"{"question": "hi"}"#);
    assert_eq!((status, by.as_str()), (200, "blue"), "{body}");
    assert_eq!(body, json!({"answer": "echo: hi"}));
    // The CLI scores it too, with the inputs as `flow test` takes them or as a JSON object.
    for inputs in ["question=hi", r#"{"question": "hi"}"#] {
        let scored = server.ok(&["endpoint", "score", "support", "--inputs", inputs]);
        let answer: Value = serde_json::from_str(&scored.stdout).unwrap();
        assert_eq!(answer, json!({"answer": "echo: hi"}), "{}", scored.stderr);
    }
    // The secondary key opens it too; no key, another endpoint's key and a user token of
    // someone else do not.
    assert_eq!(
        server
            .score(
                "support",
                Some(&format!("Bearer {secondary}")),
                r#"{"question": "hi"}"#
            )
            .0,
        200
    );
    let (status, _, body) = server.score("support", None, r#"{"question": "hi"}"#);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "Unauthorized");
    let (status, _, body) = server.score(
        "support",
        Some(&format!("Bearer {other_key}")),
        r#"{"question": "hi"}"#,
    );
    assert_eq!(status, 401, "{body}");
    let viewer = server.ok(&["user", "create", "vic", "--role", "viewer"]);
    let viewer_token = viewer.stdout.trim().to_string();
    let (status, _, body) = server.score(
        "support",
        Some(&format!("Bearer {viewer_token}")),
        r#"{"question": "hi"}"#,
    );
    assert_eq!(status, 403, "{body}");
    let owner = format!("Bearer {}", server.token());
    assert_eq!(
        server
            .score("support", Some(&owner), r#"{"question": "hi"}"#)
            .0,
        200
    );
    // A bad body names what is wrong.
    let (status, _, body) = server.score("support", Some(&bearer), r#"{"questio": "hi"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("'question'"),
        "{body}"
    );
    let (status, _, body) = server.score("support", Some(&bearer), "not json");
    assert_eq!((status, body["code"].as_str()), (400, Some("BadRequest")));

    // Streaming: promptflow's events, one per piece of the reply.
    let r = http::request(
        "POST",
        &format!("{}/endpoints/support/score", server.url),
        &[
            ("authorization", &bearer),
            ("accept", "text/event-stream"),
            ("content-type", "application/json"),
        ],
        r#"{"question": "stream me please"}"#,
    );
    let text = &r.text;
    assert_eq!(r.status, 200, "{text}");
    assert!(
        r.header("content-type").contains("text/event-stream"),
        "{:?}",
        r.headers
    );
    let pieces: Vec<String> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["answer"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(pieces.len() >= 4, "{text}");
    assert_eq!(pieces.concat(), "echo: stream me please");

    // v2 beside it, half the traffic each: both answer.
    server.ok(&["deployment", "create", "support/green", "--flow", "chat@v2"]);
    server.ok(&[
        "endpoint",
        "update",
        "support",
        "--traffic",
        "blue=50,green=50",
    ]);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let (status, by, body) = server.score("support", Some(&bearer), r#"{"question": "hi"}"#);
        assert_eq!(status, 200, "{body}");
        *seen.entry(by).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|n| *n >= 5), "{seen:?}");
    // The header picks one.
    let r = http::request(
        "POST",
        &format!("{}/endpoints/support/score", server.url),
        &[
            ("authorization", &bearer),
            ("azureml-model-deployment", "green"),
        ],
        r#"{"question": "hi"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("azureml-model-deployment"),
        "green",
        "{:?}",
        r.headers
    );
    let bad_split = server.cli(&["endpoint", "update", "support", "--traffic", "blue=50"]);
    assert_eq!(bad_split.code, 2);
    assert!(
        bad_split.stderr.contains("add up to 100"),
        "{}",
        bad_split.stderr
    );

    // A rotated connection key reaches the model with the very next request.
    conn("key-two");
    let (status, _, body) = server.score("support", Some(&bearer), r#"{"question": "hi"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fake.credentials.lock().unwrap().last().unwrap(),
        "Bearer key-two"
    );

    // A rotated endpoint key: the old one stops at once.
    let rotated = server.ok(&["endpoint", "keys", "support", "--regenerate", "primary"]);
    let new_key = rotated
        .stdout
        .trim()
        .strip_prefix("primary key:")
        .unwrap()
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        server
            .score("support", Some(&bearer), r#"{"question": "hi"}"#)
            .0,
        401
    );
    assert_eq!(
        server
            .score(
                "support",
                Some(&format!("Bearer {new_key}")),
                r#"{"question": "hi"}"#
            )
            .0,
        200
    );
    let bearer = format!("Bearer {new_key}");

    // Every request is recorded, with its trace, and listed as soon as it has been answered
    // (found by scoring, then listing at once: the list did not have it yet).
    let last = http::request(
        "POST",
        &format!("{}/endpoints/support/score", server.url),
        &[("authorization", &bearer)],
        r#"{"question": "hi"}"#,
    );
    assert_eq!(last.status, 200, "{}", last.text);
    let (status, list) = server.api("GET", "/api/v1/endpoints/support/requests?limit=1000", "");
    assert_eq!(status, 200);
    let list = list.as_array().unwrap().clone();
    assert_eq!(
        list[0]["id"].as_str(),
        Some(last.header("x-request-id").trim()),
        "{list:#?}"
    );
    assert!(list.len() >= 46, "{}", list.len());
    // Refused keys never reach a deployment; bad inputs do, and are recorded as such.
    assert!(
        list.iter()
            .any(|r| r["status"] == 400 && r["error"].as_str().unwrap().contains("'question'")),
        "{list:?}"
    );
    let ok = list
        .iter()
        .find(|r| r["status"] == 200 && r["total_tokens"] == 8)
        .expect("a recorded answer with its tokens");
    let (status, trace) = server.api(
        "GET",
        &format!(
            "/api/v1/endpoints/support/requests/{}",
            ok["id"].as_str().unwrap()
        ),
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(trace["inputs"]["question"], "hi");
    assert_eq!(trace["nodes"][0]["node"], "chat");
    assert_eq!(trace["nodes"][0]["total_tokens"], 8);
    assert!(!trace["spans"].as_array().unwrap().is_empty());
    let stats = server
        .ok(&["endpoint", "stats", "support", "--json"])
        .json();
    assert!(stats["requests"].as_u64().unwrap() >= 45, "{stats}");
    assert!(stats["errors"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["tokens"].as_u64().unwrap() >= 8 * 40, "{stats}");

    // Deleting blue: refused while it carries traffic, then its instances stop.
    let refused = server.cli(&["deployment", "delete", "support/blue"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("traffic"), "{}", refused.stderr);
    server.ok(&["endpoint", "update", "support", "--traffic", "green=100"]);
    let blue = server
        .ok(&["deployment", "show", "support/blue", "--json"])
        .json();
    let blue_sessions: Vec<String> = blue["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(blue_sessions.len(), 2);
    server.ok(&["deployment", "delete", "support/blue"]);
    let t = Instant::now();
    loop {
        let (_, sessions) = server.api("GET", "/api/v1/sessions", "");
        let left = sessions
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| blue_sessions.contains(&s["id"].as_str().unwrap().to_string()))
            .count();
        if left == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "blue's sessions remain"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, by, _) = server.score("support", Some(&bearer), r#"{"question": "hi"}"#);
    assert_eq!((status, by.as_str()), (200, "green"));
    let listed = server.ok(&["deployment", "list", "support"]);
    assert!(listed.stdout.contains("support/green") && !listed.stdout.contains("support/blue"));

    // Deleting the endpoint stops its last instance too, and its URL answers 404.
    let green = server
        .ok(&["deployment", "show", "support/green", "--json"])
        .json();
    let green_session = green["replicas"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.ok(&["endpoint", "delete", "support"]);
    let t = Instant::now();
    while server
        .api("GET", &format!("/api/v1/sessions/{green_session}"), "")
        .0
        != 404
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "green's session remains"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = Instant::now();
    while server
        .score("support", Some(&bearer), r#"{"question": "hi"}"#)
        .0
        != 404
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the endpoint still answers"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every span of `bodies` (OTLP/HTTP JSON export requests) whose resource's `collection` is
/// `collection`.
fn spans_of(bodies: &[Value], collection: &str) -> Vec<Value> {
    bodies
        .iter()
        .flat_map(|b| b["resourceSpans"].as_array().cloned().unwrap_or_default())
        .filter(|rs| {
            rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["key"] == "collection" && a["value"]["stringValue"] == collection)
        })
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A server that exports to a collector sends it each scored request's spans, under the
/// endpoint's name. A deployment that redacts payloads sends the same spans without what went
/// in or out (its stored requests keep none either), and with them still the timing.
#[test]
fn scored_requests_reach_the_otlp_collector_and_redacted_ones_carry_no_payload() {
    let (collector_url, got) = collector();
    let server = Server::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .start();
    push_echo(&server, "v1");
    let bearer = format!("Bearer {}", endpoint_key(&server, "traced"));
    server.ok(&["deployment", "create", "traced/blue", "--flow", "echo@v1"]);
    let spans_with = |needle: &str| {
        let t = Instant::now();
        loop {
            let spans = spans_of(&got.lock().unwrap(), "endpoint/traced");
            let found: Vec<Value> = spans
                .into_iter()
                .filter(|span| {
                    span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|a| {
                            a["key"] == "endpoint.request_id" && a["value"]["stringValue"] == needle
                        })
                })
                .collect();
            if !found.is_empty() {
                return found;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no span of request {needle} reached the collector: {:#}",
                Value::Array(got.lock().unwrap().clone())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let score = |text: &str| {
        let r = http::request(
            "POST",
            &format!("{}/endpoints/traced/score", server.url),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            json!({ "text": text }).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r.header("x-request-id").trim().to_string()
    };

    let plain = score("card number 4242");
    let spans = spans_with(&plain);
    let text = serde_json::to_string(&spans).unwrap();
    assert!(text.contains("card number 4242"), "{text}");
    // Each span says which deployment answered.
    assert!(spans.iter().all(|s| s["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["key"] == "endpoint.deployment" && a["value"]["stringValue"] == "blue")));
    assert!(text.contains("promptflow.function.inputs"), "{text}");

    server.ok(&["deployment", "update", "traced/blue", "--redact-payloads"]);
    let redacted = score("secret phrase 9999");
    let spans = spans_with(&redacted);
    // The flow's span and its node's, timed, with nothing of the request in them.
    assert!(spans.len() >= 2, "{spans:#?}");
    assert!(spans
        .iter()
        .all(|s| s["endTimeUnixNano"] != s["startTimeUnixNano"]));
    let everything = serde_json::to_string(&*got.lock().unwrap()).unwrap();
    assert!(!everything.contains("secret phrase 9999"), "{everything}");
    assert!(!serde_json::to_string(&spans)
        .unwrap()
        .contains("promptflow.function"));
    let (status, stored) = server.api(
        "GET",
        &format!("/api/v1/endpoints/traced/requests/{redacted}"),
        "",
    );
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["inputs"], Value::Null, "{stored}");
    assert!(files_holding(server.home(), "secret phrase 9999").is_empty());
}

/// One request of the load: how it ended, and which version answered.
#[derive(Clone, Debug)]
struct Outcome {
    at: Duration,
    status: u16,
    version: String,
}

#[test]
fn a_deployment_moves_to_a_new_version_and_survives_a_killed_instance_under_load() {
    let server = Server::start();
    push_echo(&server, "v1");
    push_echo(&server, "v2");
    let key = endpoint_key(&server, "load");
    server.ok(&[
        "deployment",
        "create",
        "load/main",
        "--flow",
        "echo@v1",
        "--instances",
        "2",
    ]);

    // The load: 8 connections, each a request every 60 ms (about 130 requests/s), for 30 s.
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let started = Instant::now();
    let url = format!("{}/endpoints/load/score", server.url);
    let load = {
        let (outcomes, key, url) = (outcomes.clone(), key.clone(), url.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = reqwest::Client::new();
                let mut tasks = Vec::new();
                for worker in 0..8u64 {
                    let (client, outcomes, key, url) =
                        (client.clone(), outcomes.clone(), key.clone(), url.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut tick = tokio::time::interval(Duration::from_millis(60));
                        tokio::time::sleep(Duration::from_millis(worker * 7)).await;
                        while started.elapsed() < Duration::from_secs(30) {
                            tick.tick().await;
                            let at = started.elapsed();
                            let reply = client
                                .post(&url)
                                .bearer_auth(&key)
                                .json(&json!({"text": "x"}))
                                .timeout(Duration::from_secs(10))
                                .send()
                                .await;
                            let (status, version) = match reply {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    let v: Value = r.json().await.unwrap_or(Value::Null);
                                    (status, v["version"].as_str().unwrap_or("").to_string())
                                }
                                Err(_) => (0, String::new()),
                            };
                            outcomes.lock().unwrap().push(Outcome {
                                at,
                                status,
                                version,
                            });
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };

    // At 5 s: move to v2 (waits until v2 serves and v1 is gone).
    std::thread::sleep(Duration::from_secs(5));
    let switch_started = started.elapsed();
    server.ok(&["deployment", "update", "load/main", "--flow", "echo@v2"]);
    let switched = started.elapsed();
    // At 15 s (or once switched): SIGKILL one instance.
    std::thread::sleep(Duration::from_secs(15).saturating_sub(started.elapsed()));
    let before = server
        .ok(&["deployment", "show", "load/main", "--json"])
        .json();
    let victim = before["replicas"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let killed_at = started.elapsed();
    kill_session(&victim);
    // It is replaced within 5 s: two instances serve again, the victim not among them.
    let replaced_at = loop {
        let d = server
            .ok(&["deployment", "show", "load/main", "--json"])
            .json();
        let serving: Vec<&Value> = d["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["routed"] == true && r["session_id"] != victim.as_str())
            .collect();
        if serving.len() == 2 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() - killed_at < Duration::from_secs(5),
            "the killed instance was not replaced within 5 s: {d}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    load.join().unwrap();

    let all = outcomes.lock().unwrap().clone();
    let rate = all.len() as f64 / 30.0;
    assert!(rate >= 100.0, "only {rate:.0} requests/s");
    let failed: Vec<&Outcome> = all.iter().filter(|o| o.status != 200).collect();
    // The switch failed nothing; the kill, at most the requests in flight on the victim (one
    // per connection at most).
    let around_switch = failed
        .iter()
        .filter(|o| o.at >= switch_started && o.at <= switched)
        .count();
    assert_eq!(around_switch, 0, "{failed:?}");
    assert!(failed.len() <= 8, "{} failed: {failed:?}", failed.len());
    assert!(failed
        .iter()
        .all(|o| o.at + Duration::from_secs(1) >= killed_at && o.at <= replaced_at));
    // v1 answered before the switch, v2 after it, and nothing else.
    assert!(all
        .iter()
        .filter(|o| o.status == 200)
        .all(|o| o.version == "v1" || o.version == "v2"));
    assert!(all
        .iter()
        .any(|o| o.at < switch_started && o.version == "v1"));
    assert!(all
        .iter()
        .filter(|o| o.at > switched && o.status == 200)
        .all(|o| o.version == "v2"));
    eprintln!(
        "{} requests in 30 s ({rate:.0}/s), {} failed; switched in {:.1} s; replaced in {:.1} s",
        all.len(),
        failed.len(),
        (switched - switch_started).as_secs_f64(),
        (replaced_at - killed_at).as_secs_f64()
    );
}

#[test]
fn a_scaling_deployment_grows_with_its_load() {
    let server = Server::start();
    push_echo(&server, "v1");
    let key = endpoint_key(&server, "elastic");
    server.ok(&[
        "deployment",
        "create",
        "elastic/main",
        "--flow",
        "echo@v1",
        "--min",
        "1",
        "--max",
        "3",
        "--target-concurrency",
        "2",
    ]);
    let shown = server
        .ok(&["deployment", "show", "elastic/main", "--json"])
        .json();
    assert_eq!(shown["instances"], 1, "{shown}");
    // Eight callers, each waiting on a 0.3 s line: about eight requests in flight.
    let url = format!("{}/endpoints/elastic/score", server.url);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (url, key, stop) = (url.clone(), key.clone(), stop.clone());
            std::thread::spawn(move || {
                let auth = format!("Bearer {key}");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = http::request(
                        "POST",
                        &url,
                        &[("authorization", &auth)],
                        r#"{"text": "x", "delay": 0.3}"#,
                    );
                    assert_eq!(r.status, 200, "{}", r.text);
                }
            })
        })
        .collect();
    let t = Instant::now();
    let grown = loop {
        let d = server
            .ok(&["deployment", "show", "elastic/main", "--json"])
            .json();
        let ready = d["ready"].as_u64().unwrap();
        if d["instances"] == 3 && ready == 3 {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the deployment did not grow to 3 serving instances: {d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    eprintln!(
        "grew from 1 to 3 serving instances in {:.1} s",
        grown.as_secs_f64()
    );
    // It never grows past its maximum.
    let d = server
        .ok(&["deployment", "show", "elastic/main", "--json"])
        .json();
    assert_eq!(d["instances"], 3, "{d}");
}
