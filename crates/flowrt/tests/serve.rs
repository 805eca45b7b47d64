//! `flowrt flow serve`: promptflow's serving contract over a real socket.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::{flow, free_port, http, Env, FakeOpenAi};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(env: &Env, dir: &std::path::Path) -> Server {
    // A free port may be taken by another test's server before this one binds it: then this
    // server exits, and the health check would reach the other one. Try again on another port.
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args([
                "flow",
                "serve",
                dir.to_str().unwrap(),
                "--port",
                &port.to_string(),
            ])
            .env("FLOWRT_HOME", env.home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                break; // the port was taken
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http("GET", &format!("{base}/health"), &[], "").0 == 200
                && child.try_wait().is_ok_and(|s| s.is_none())
            {
                return Server { child, base };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("flow serve did not become healthy");
}

fn post(s: &Server, body: &str) -> (u16, Value) {
    let (status, _, text) = http(
        "POST",
        &format!("{}/score", s.base),
        &[("content-type", "application/json")],
        body,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

#[test]
fn score_health_version_and_swagger() {
    let env = Env::new();
    let (_d, dir) = flow("pipeline");
    let s = serve(&env, &dir);
    let (status, out) = post(&s, r#"{"text": "a b c", "times": "2", "loud": true}"#);
    assert_eq!(status, 200);
    assert_eq!(
        out,
        json!({"stats": {"count": 3, "words": ["a", "b", "c"]}, "first_word": "a", "repeated": "c-c",
               "shouted": "A B C!", "summary": "c-c / A B C!", "echo": "a b c"})
    );
    let (status, _, health) = http("GET", &format!("{}/health", s.base), &[], "");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&health).unwrap()["status"],
        json!("Healthy")
    );
    let (status, _, version) = http("GET", &format!("{}/version", s.base), &[], "");
    assert_eq!(status, 200);
    assert!(version.contains("\"version\""));
    let (_, _, swagger) = http("GET", &format!("{}/swagger.json", s.base), &[], "");
    let swagger: Value = serde_json::from_str(&swagger).unwrap();
    let schema =
        &swagger["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        schema["properties"]["times"],
        json!({"type": "integer", "default": 2})
    );
    assert_eq!(
        schema["properties"]["loud"],
        json!({"type": "boolean", "default": false})
    );
    assert_eq!(schema["required"], json!(["text", "times", "loud"]));
}

#[test]
fn bad_requests_get_400_with_the_reason() {
    let env = Env::new();
    let (_d, dir) = flow("pipeline");
    let s = serve(&env, &dir);
    let (status, out) = post(&s, r#"{"times": 2}"#);
    assert_eq!(status, 400);
    assert_eq!(
        out,
        json!({"error": {"code": "UserError", "message": "missing required input 'text' (string)"}})
    );
    let (status, out) = post(&s, "{not json");
    assert_eq!(status, 400);
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not valid JSON"),
        "{out}"
    );
    let (status, out) = post(&s, "[1, 2]");
    assert_eq!(status, 400);
    assert_eq!(
        out["error"]["message"],
        json!("the request body must be a JSON object of flow inputs")
    );
    let (status, out) = post(&s, r#"{"text": "x", "times": "many"}"#);
    assert_eq!(status, 400);
    assert_eq!(
        out["error"]["message"],
        json!("input 'times': value 'many' is not a valid int")
    );
}

#[test]
fn a_failing_tool_is_a_400_naming_the_node() {
    let env = Env::new();
    let (_d, dir) = flow("broken_tool");
    let s = serve(&env, &dir);
    let (status, out) = post(&s, r#"{"n": 0}"#);
    assert_eq!(status, 400);
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("node 'invert' failed: ValueError: cannot invert zero (code INV-0)"),
        "{message}"
    );
    // The server keeps serving.
    assert_eq!(post(&s, r#"{"n": 4}"#), (200, json!({"r": 0.25})));
}

#[test]
fn concurrent_requests_share_the_workers() {
    let env = Env::new();
    let (_d, dir) = flow("pipeline");
    let s = serve(&env, &dir);
    let base = s.base.clone();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let url = format!("{base}/score");
            std::thread::spawn(move || {
                let body = format!(r#"{{"text": "word{i} x", "times": 1}}"#);
                let (status, _, text) = http("POST", &url, &[], &body);
                (i, status, serde_json::from_str::<Value>(&text).unwrap())
            })
        })
        .collect();
    for h in handles {
        let (i, status, out) = h.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(out["first_word"], json!(format!("word{i}")));
    }
}

#[test]
fn an_llm_reply_streams_as_server_sent_events() {
    let fake = FakeOpenAi::start(0);
    let env = Env::new();
    env.connection(&format!(
        "name: test_openai\ntype: open_ai\napi_key: k\nbase_url: {}/v1\n",
        fake.base
    ));
    let (_d, dir) = flow("chat");
    let s = serve(&env, &dir);
    let url = format!("{}/score", s.base);
    let (status, head, body) = http(
        "POST",
        &url,
        &[("accept", "text/event-stream")],
        r#"{"question": "tell me more"}"#,
    );
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let events: Vec<Value> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(events.len() >= 3, "one event per chunk: {body}");
    let joined: String = events
        .iter()
        .map(|e| e["answer"].as_str().unwrap())
        .collect();
    assert_eq!(joined, "echo: tell me more");
    // The same request without the Accept header gets the whole answer as JSON.
    let (status, _, body) = http("POST", &url, &[], r#"{"question": "tell me more"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"answer": "echo: tell me more"})
    );
}

/// A served flow's clients cannot make it read a file of the server's through an image input:
/// a path (as a string, a `;path` dict, nested in an object, or openai-vision's `image_file`)
/// gets a 400 naming the input, and nothing is read; base64 data still works.
#[test]
fn a_served_flow_refuses_image_paths_from_requests() {
    let env = Env::new();
    let (_d, dir) = common::flow("compat_image");
    std::fs::write(dir.join("dot.png"), b"\x89PNG\r\n\x1a\nnot-really").unwrap();
    let server = serve(&env, &dir);
    for body in [
        r#"{"picture": "/etc/hostname"}"#,
        r#"{"picture": {"data:image/png;path": "/etc/hostname"}}"#,
        r#"{"picture": {"type": "image_file", "image_file": {"path": "/etc/hostname"}}}"#,
        r#"{"picture": "data:image/png;base64,aGk=", "extra": {"x": [{"data:image/png;path": "../../etc/hostname"}]}}"#,
    ] {
        let (status, v) = post(&server, body);
        assert_eq!(status, 400, "{body}: {v}");
        let message = v.to_string();
        assert!(
            message.contains("never a path on the server"),
            "{body}: {message}"
        );
    }
    let (status, v) = post(
        &server,
        r#"{"picture": "data:image/png;base64,iVBORw0KGgo="}"#,
    );
    assert_eq!(status, 200, "{v}");
}

/// Issue 21: `/score` answers a flex flow's plain result as the value itself, as `pf flow serve`
/// does, and a dict as the dict.
#[test]
fn a_plain_result_is_answered_as_the_value() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("entry.py"),
        "def shout(x: str):\n    return [x.upper(), len(x)]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("flow.flex.yaml"), "entry: entry:shout\n").unwrap();
    let s = serve(&env, dir.path());
    assert_eq!(post(&s, r#"{"x": "hey"}"#), (200, json!(["HEY", 3])));
}
