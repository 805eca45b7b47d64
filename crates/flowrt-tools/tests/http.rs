//! The LLM/embedding clients against a local HTTP server that records requests.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_api::connection::{Connection, ConnectionKind};
use flowrt_tools::{
    LlmApi, LlmCall, LlmClient, RetryCause, RetryEvent, RetryPolicy, TemplateVar, ToolError,
};
use futures::StreamExt;
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "sk-test-SECRET-123";

#[derive(Clone, Debug)]
struct Recorded {
    target: String,
    headers: HashMap<String, String>,
    body: Value,
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

#[derive(Clone, Default)]
struct Server {
    base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Server {
    async fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Server {
            base: format!("http://{addr}"),
            requests: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { s.handle(sock).await });
            }
        });
        server
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    async fn handle(&self, mut sock: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default();
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < header_end + len {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Value = serde_json::from_slice(&buf[header_end..]).unwrap_or(Value::Null);
        self.requests.lock().expect("lock").push(Recorded {
            target: target.clone(),
            headers,
            body: body.clone(),
        });
        let scripted = self.script.lock().expect("lock").pop_front();
        let reply = scripted.unwrap_or_else(|| default_reply(&target, &body));
        let mut out = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        let _ = sock.write_all(out.as_bytes()).await;
        let _ = sock.shutdown().await;
    }
}

fn default_reply(target: &str, body: &Value) -> Reply {
    let path = target.split('?').next().unwrap_or_default();
    if path.ends_with("/chat/completions") {
        let last_user = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string();
        if body["stream"] == json!(true) {
            let mut sse = String::new();
            for piece in ["echo: ", &last_user] {
                sse.push_str(&format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": piece}}]})
                ));
            }
            sse.push_str("data: [DONE]\n\n");
            return Reply {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                body: sse,
            };
        }
        return Reply::json(
            200,
            json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {last_user}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
            }),
        );
    }
    if path.ends_with("/completions") {
        let prompt = body["prompt"].as_str().unwrap_or_default();
        return Reply::json(
            200,
            json!({"choices": [{"index": 0, "text": format!("echo: {prompt}")}]}),
        );
    }
    if path.ends_with("/embeddings") {
        return Reply::json(
            200,
            json!({"data": [{"index": 0, "embedding": [0.25, -0.5, 1.0]}]}),
        );
    }
    Reply::json(404, json!({"error": {"message": "no route"}}))
}

fn conn(kind: ConnectionKind, configs: &[(&str, &str)]) -> Connection {
    Connection {
        name: "test_conn".into(),
        kind,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        secrets: [("api_key".to_string(), KEY.to_string())]
            .into_iter()
            .collect(),
    }
}

fn fast_client(max_retries: u32) -> LlmClient {
    LlmClient::new(RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        max_connect_retries: max_retries,
        connect_delay: Duration::from_millis(1),
        rate_limit_budget: Duration::from_secs(5),
    })
}

fn inputs(items: &[(&str, Value)]) -> IndexMap<String, TemplateVar> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), TemplateVar::escaped(v.clone())))
        .collect()
}

const CHAT: &str = "# system:\nBe brief.\n# user:\n{{ question }}\n";

#[tokio::test]
async fn openai_chat_request_and_parameter_conversion() {
    let server = Server::start(vec![]).await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[
            ("base_url", &format!("{}/v1/", server.base)),
            ("organization", "org-1"),
        ],
    );
    let call = LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: &c,
        template: CHAT,
        inputs: inputs(&[
            ("model", json!("gpt-4o-mini")),
            ("temperature", json!("0.2")),
            ("max_tokens", json!("64")),
            ("stop", json!("[\"\\n\\n\"]")),
            ("response_format", json!("{\"type\": \"json_object\"}")),
            ("seed", json!(7)),
            ("n", json!(3)),
            ("question", json!("  What is a DAG?  ")),
        ]),
    };
    let result = fast_client(0).run_llm(call).await.expect("chat");
    assert_eq!(result.output, json!("echo: What is a DAG?"));
    assert_eq!(result.usage.map(|u| u.total_tokens), Some(7));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.target, "/v1/chat/completions");
    assert_eq!(
        r.headers.get("authorization").map(String::as_str),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(
        r.headers.get("openai-organization").map(String::as_str),
        Some("org-1")
    );
    assert!(!r.headers.contains_key("api-key"));
    assert_eq!(r.body["model"], json!("gpt-4o-mini"));
    assert_eq!(r.body["temperature"], json!(0.2));
    assert_eq!(r.body["top_p"], json!(1.0));
    assert_eq!(r.body["max_tokens"], json!(64));
    assert_eq!(r.body["stop"], json!(["\n\n"]));
    assert_eq!(r.body["response_format"], json!({"type": "json_object"}));
    assert_eq!(r.body["seed"], json!(7));
    assert!(r.body.get("stream").is_none());
    // `n` is not a parameter of promptflow's OpenAI chat tool: it stays a template variable.
    assert!(r.body.get("n").is_none());
    assert_eq!(
        r.body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a DAG?"}])
    );
}

#[tokio::test]
async fn azure_chat_uses_deployment_url_and_api_key_header() {
    let server = Server::start(vec![]).await;
    let c = conn(
        ConnectionKind::AzureOpenAi,
        &[
            ("api_base", &server.base),
            ("api_version", "2024-06-01"),
            ("api_type", "azure"),
        ],
    );
    let call = LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: &c,
        template:
            "system:\nTranslate.\nuser:\nGood morning\nassistant:\nGuten Morgen\nuser:\n{{ text }}",
        inputs: inputs(&[
            ("deployment_name", json!("gpt-35")),
            ("max_tokens", json!(100)),
            ("temperature", json!(0.0)),
            ("text", json!("東京は晴れです")),
        ]),
    };
    let result = fast_client(0).run_llm(call).await.expect("chat");
    assert_eq!(result.output, json!("echo: 東京は晴れです"));
    let r = &server.requests()[0];
    assert_eq!(
        r.target,
        "/openai/deployments/gpt-35/chat/completions?api-version=2024-06-01"
    );
    assert_eq!(r.headers.get("api-key").map(String::as_str), Some(KEY));
    assert!(!r.headers.contains_key("authorization"));
    assert_eq!(r.body["model"], json!("gpt-35"));
    assert_eq!(r.body["n"], json!(1));
    assert_eq!(r.body["messages"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn completion_sends_the_prompt_unstripped() {
    let server = Server::start(vec![]).await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let call = LlmCall {
        vision: None,
        api: LlmApi::Completion,
        connection: &c,
        template: "Write one sentence.\n{{ body }}\nSentence:\n",
        inputs: inputs(&[
            ("model", json!("gpt-3.5-turbo-instruct")),
            ("max_tokens", json!("32")),
            ("temperature", json!(0)),
            ("body", json!("Topic: x\n- one\n")),
        ]),
    };
    let result = fast_client(0).run_llm(call).await.expect("completion");
    assert_eq!(
        result.output,
        json!("echo: Write one sentence.\nTopic: x\n- one\n\nSentence:\n")
    );
    let r = &server.requests()[0];
    assert_eq!(r.target, "/v1/completions");
    assert_eq!(
        r.body["prompt"],
        json!("Write one sentence.\nTopic: x\n- one\n\nSentence:\n")
    );
    assert_eq!(r.body["max_tokens"], json!(32));
    assert_eq!(r.body["temperature"], json!(0.0));
}

#[tokio::test]
async fn serverless_chat_appends_v1() {
    let server = Server::start(vec![]).await;
    let c = conn(ConnectionKind::Serverless, &[("api_base", &server.base)]);
    let call = LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: &c,
        template: "user:\nhi",
        inputs: IndexMap::new(),
    };
    fast_client(0).run_llm(call).await.expect("chat");
    let r = &server.requests()[0];
    assert_eq!(r.target, "/v1/chat/completions");
    assert_eq!(
        r.headers.get("authorization").map(String::as_str),
        Some(&*format!("Bearer {KEY}"))
    );
}

#[tokio::test]
async fn embeddings_openai_and_azure() {
    let server = Server::start(vec![]).await;
    let client = fast_client(0);
    let oai = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let args: IndexMap<String, Value> = [
        ("input".to_string(), json!("hello world")),
        ("model".to_string(), json!("text-embedding-3-small")),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        client.embedding(&oai, &args).await.expect("embedding"),
        json!([0.25, -0.5, 1.0])
    );
    let aoai = conn(ConnectionKind::AzureOpenAi, &[("api_base", &server.base)]);
    let args: IndexMap<String, Value> = [
        ("input".to_string(), json!("hallo")),
        ("deployment_name".to_string(), json!("emb")),
    ]
    .into_iter()
    .collect();
    client.embedding(&aoai, &args).await.expect("embedding");
    let reqs = server.requests();
    assert_eq!(reqs[0].target, "/v1/embeddings");
    assert_eq!(
        reqs[0].body,
        json!({"input": "hello world", "model": "text-embedding-3-small"})
    );
    assert_eq!(
        reqs[1].target,
        "/openai/deployments/emb/embeddings?api-version=2024-02-01"
    );
    assert_eq!(reqs[1].body, json!({"input": "hallo", "model": "emb"}));
}

fn simple_call(c: &Connection) -> LlmCall<'_> {
    LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: c,
        template: "user:\nping",
        inputs: inputs(&[("model", json!("m"))]),
    }
}

#[tokio::test]
async fn retries_429_honouring_retry_after() {
    let server = Server::start(vec![Reply::json(
        429,
        json!({"error": {"message": "slow down", "type": "rate_limit_exceeded"}}),
    )
    .header("Retry-After", "0")])
    .await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    // A large base delay: only the Retry-After: 0 keeps this test fast.
    let client = LlmClient::new(RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(60),
        ..RetryPolicy::default()
    });
    let result = tokio::time::timeout(Duration::from_secs(10), client.run_llm(simple_call(&c)))
        .await
        .expect("no backoff wait");
    assert_eq!(result.expect("chat").output, json!("echo: ping"));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn retries_5xx_then_succeeds() {
    let fail = Reply::json(
        500,
        json!({"error": {"message": "boom", "type": "server_error"}}),
    );
    let server = Server::start(vec![fail.clone(), fail]).await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let result = fast_client(5).run_llm(simple_call(&c)).await.expect("chat");
    assert_eq!(result.output, json!("echo: ping"));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn gives_up_after_max_retries_and_says_how_often_it_tried() {
    let fail =
        Reply::json(503, json!({"error": {"message": "overloaded"}})).header("retry-after-ms", "1");
    let server = Server::start(vec![fail.clone(), fail.clone(), fail.clone(), fail]).await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let err = fast_client(2)
        .run_llm(simple_call(&c))
        .await
        .expect_err("must fail");
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.attempts(), 3);
    let text = err.to_string();
    assert!(
        text.contains("after 3 attempts") && text.contains("overloaded"),
        "{text}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn client_errors_fail_at_once_without_leaking_the_key() {
    let bad = Reply::json(
        400,
        json!({"error": {"message": format!("Invalid request with key {KEY}"), "type": "invalid_request_error"}}),
    );
    let server = Server::start(vec![bad]).await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let err = fast_client(5)
        .run_llm(simple_call(&c))
        .await
        .expect_err("must fail");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(err.status(), Some(400));
    let text = err.to_string();
    assert!(
        text.contains("HTTP 400") && text.contains("Invalid request"),
        "{text}"
    );
    assert!(
        !text.contains(KEY) && !format!("{err:?}").contains(KEY),
        "{text}"
    );
    assert!(!format!("{c:?}").contains(KEY));
}

#[tokio::test]
async fn connection_refused_is_retried_then_names_the_url() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("http://{addr}/v1"))],
    );
    let err = fast_client(2)
        .run_llm(simple_call(&c))
        .await
        .expect_err("must fail");
    assert!(matches!(err, ToolError::Network { .. }), "{err:?}");
    assert_eq!(err.attempts(), 3);
    let text = err.to_string();
    assert!(
        text.contains(&format!("http://{addr}/v1/chat/completions")),
        "{text}"
    );
    assert!(!text.contains(KEY));
}

#[tokio::test]
async fn a_dead_endpoint_fails_fast_and_every_retry_is_announced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("http://{addr}/v1"))],
    );
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<RetryEvent>::new()));
    let sink = heard.clone();
    // The default policy: 8 retries for a 429, but a refused connection is not a 429.
    let client = LlmClient::new(RetryPolicy::default()).with_retry_listener(std::sync::Arc::new(
        move |e: &RetryEvent| sink.lock().expect("lock").push(e.clone()),
    ));
    let started = std::time::Instant::now();
    let err = client
        .run_llm(simple_call(&c))
        .await
        .expect_err("must fail");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.attempts(), 3, "{err}");
    let events = heard.lock().expect("lock").clone();
    assert_eq!(events.len(), 2, "{events:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.cause, RetryCause::Unreachable);
        assert_eq!(e.attempt, i as u32 + 1);
        assert_eq!(e.max_attempts, 3);
        let text = e.to_string();
        assert!(
            text.contains(&format!("http://{addr}/v1/chat/completions")),
            "{text}"
        );
        assert!(text.contains("retrying in"), "{text}");
    }
}

#[tokio::test]
async fn rate_limits_are_announced_with_their_wait() {
    let server = Server::start(vec![Reply::json(
        429,
        json!({"error": {"message": "slow down", "type": "rate_limit_exceeded"}}),
    )
    .header("Retry-After", "0")])
    .await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<RetryEvent>::new()));
    let sink = heard.clone();
    let client = fast_client(3).with_retry_listener(std::sync::Arc::new(move |e: &RetryEvent| {
        sink.lock().expect("lock").push(e.clone())
    }));
    client.run_llm(simple_call(&c)).await.expect("chat");
    let events = heard.lock().expect("lock").clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].cause, RetryCause::RateLimited);
    assert!(events[0].failure.contains("429"), "{}", events[0].failure);
    assert!(
        events[0].failure.contains("slow down"),
        "{}",
        events[0].failure
    );
}

#[tokio::test]
async fn tool_calls_reply_returns_the_message_object() {
    let message = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]});
    let server = Server::start(vec![Reply::json(
        200,
        json!({"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}),
    )])
    .await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let tools = r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]"#;
    let call = LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: &c,
        template: "user:\nweather in Oslo?",
        inputs: inputs(&[
            ("model", json!("m")),
            ("tools", json!(tools)),
            ("tool_choice", json!("auto")),
        ]),
    };
    let result = fast_client(0).run_llm(call).await.expect("chat");
    assert_eq!(
        result.output["tool_calls"][0]["function"]["name"],
        json!("get_weather")
    );
    assert_eq!(result.output["role"], json!("assistant"));
    let r = &server.requests()[0];
    assert_eq!(r.body["tools"][0]["function"]["name"], json!("get_weather"));
    assert_eq!(r.body["tool_choice"], json!("auto"));
}

#[tokio::test]
async fn bad_parameters_and_connections_are_named() {
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", "http://127.0.0.1:9/v1")],
    );
    let call = LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: &c,
        template: "user:\nx",
        inputs: inputs(&[("max_tokens", json!("lots"))]),
    };
    match fast_client(0).run_llm(call).await {
        Err(ToolError::BadParameter { name, .. }) => assert_eq!(name, "max_tokens"),
        other => panic!("{other:?}"),
    }
    let mut azure = conn(ConnectionKind::AzureOpenAi, &[]);
    let call = LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: &azure,
        template: "user:\nx",
        inputs: inputs(&[("deployment_name", json!("d"))]),
    };
    match fast_client(0).run_llm(call).await {
        Err(ToolError::ConnectionField { field, .. }) => assert_eq!(field, "api_base"),
        other => panic!("{other:?}"),
    }
    azure
        .configs
        .insert("api_base".into(), "http://127.0.0.1:9".into());
    let call = LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: &azure,
        template: "user:\nx",
        inputs: IndexMap::new(),
    };
    match fast_client(0).run_llm(call).await {
        Err(ToolError::BadParameter { name, .. }) => assert_eq!(name, "deployment_name"),
        other => panic!("{other:?}"),
    }
    let custom = conn(ConnectionKind::Custom, &[]);
    assert!(matches!(
        fast_client(0).run_llm(simple_call(&custom)).await,
        Err(ToolError::UnsupportedConnection { .. })
    ));
}

#[tokio::test]
async fn streamed_chat_yields_content_pieces() {
    let server = Server::start(vec![]).await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let call = LlmCall {
        vision: None,
        api: LlmApi::Chat,
        connection: &c,
        template: "user:\nhello",
        inputs: inputs(&[("model", json!("m"))]),
    };
    let stream = fast_client(0).run_llm_stream(call).await.expect("stream");
    let pieces: Vec<String> = stream.map(|p| p.expect("piece")).collect().await;
    assert_eq!(pieces.concat(), "echo: hello");
    assert_eq!(server.requests()[0].body["stream"], json!(true));
}

/// Issue 20: a reply that says the quota is spent (`x-ratelimit-remaining-requests: 0`) holds the
/// endpoint's next request until its reset, instead of spending a 429 on it.
#[tokio::test]
async fn a_reply_that_spends_the_quota_holds_the_next_request_until_its_reset() {
    let spent = Reply::json(
        200,
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: ping"}, "finish_reason": "stop"}]}),
    )
    .header("x-ratelimit-remaining-requests", "0")
    .header("x-ratelimit-reset-requests", "400ms");
    let server = Server::start(vec![spent]).await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[("base_url", &format!("{}/v1", server.base))],
    );
    let client = fast_client(1);
    client.run_llm(simple_call(&c)).await.expect("first");
    let t = std::time::Instant::now();
    client.run_llm(simple_call(&c)).await.expect("second");
    assert!(
        t.elapsed() >= Duration::from_millis(380),
        "the second request started after {:?}",
        t.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
}

/// A 429 is not a failure until the call's rate-limit budget is spent; a connection may set that
/// budget (`rate_limit_budget_s`), and the failure says what to do.
#[tokio::test]
async fn a_call_fails_on_rate_limits_only_after_its_budget_with_what_to_do() {
    let refused = Reply::json(
        429,
        json!({"error": {"message": "over quota", "type": "rate_limit_exceeded"}}),
    )
    .header("retry-after-ms", "50");
    let server = Server::start(vec![refused; 40]).await;
    let c = conn(
        ConnectionKind::OpenAi,
        &[
            ("base_url", &format!("{}/v1", server.base)),
            ("rate_limit_budget_s", "0.3"),
        ],
    );
    // Far more retries than the budget allows: the budget, not max_retries, ends it.
    let t = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        LlmClient::default().run_llm(simple_call(&c)),
    )
    .await
    .expect("the budget ends the call")
    .expect_err("must fail");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(err.status(), Some(429));
    let text = err.to_string();
    assert!(text.contains("rate_limit_budget_s"), "{text}");
    assert!(text.contains("over quota"), "{text}");
}
