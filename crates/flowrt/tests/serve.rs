//! `flowrt flow serve`: promptflow's serving contract over a real socket.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::flow_serve::FlowServe;
use common::http::{self, get};
use common::{flow, Env, FakeOpenAi};
use serde_json::{json, Value};

fn post(s: &FlowServe, body: &str) -> (u16, Value) {
    let r = s.score(&[("content-type", "application/json")], body);
    (
        r.status,
        serde_json::from_str(&r.text).unwrap_or_else(|e| panic!("{e}: {}", r.text)),
    )
}

#[test]
fn score_health_version_and_swagger() {
    let env = Env::new();
    let (_d, dir) = flow("pipeline");
    let s = FlowServe::start(&env, &dir);
    let (status, out) = post(&s, r#"{"text": "a b c", "times": "2", "loud": true}"#);
    assert_eq!(status, 200);
    assert_eq!(
        out,
        json!({"stats": {"count": 3, "words": ["a", "b", "c"]}, "first_word": "a", "repeated": "c-c",
               "shouted": "A B C!", "summary": "c-c / A B C!", "echo": "a b c"})
    );
    let health = get(&format!("{}/health", s.base));
    assert_eq!(health.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&health.text).unwrap()["status"],
        json!("Healthy")
    );
    let version = get(&format!("{}/version", s.base));
    assert_eq!(version.status, 200);
    assert!(version.text.contains("\"version\""));
    let swagger = get(&format!("{}/swagger.json", s.base)).text;
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
    let s = FlowServe::start(&env, &dir);
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
    let s = FlowServe::start(&env, &dir);
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
    let s = FlowServe::start(&env, &dir);
    let base = s.base.clone();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let url = format!("{base}/score");
            std::thread::spawn(move || {
                let body = format!(r#"{{"text": "word{i} x", "times": 1}}"#);
                let r = http::request("POST", &url, &[], &body);
                (i, r.status, serde_json::from_str::<Value>(&r.text).unwrap())
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
    let s = FlowServe::start(&env, &dir);
    let r = s.score(
        &[("accept", "text/event-stream")],
        r#"{"question": "tell me more"}"#,
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").starts_with("text/event-stream"),
        "{:?}",
        r.headers
    );
    let body = r.text;
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
    let r = s.score(&[], r#"{"question": "tell me more"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&r.text).unwrap(),
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
    let server = FlowServe::start(&env, &dir);
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
    let s = FlowServe::start(&env, dir.path());
    assert_eq!(post(&s, r#"{"x": "hey"}"#), (200, json!(["HEY", 3])));
}
