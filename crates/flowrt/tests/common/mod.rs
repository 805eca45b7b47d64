//! Test fixtures: running the real `flowrt` binary with a private FLOWRT_HOME, and a small
//! OpenAI-compatible server on 127.0.0.1 that records what it receives.

#![allow(dead_code)]

pub mod flow_serve;
pub mod http;
pub mod server;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

static SPAWNED: AtomicUsize = AtomicUsize::new(0);

pub struct Env {
    pub home: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Run `cmd` to its end.
    pub fn of(cmd: &mut Command) -> Run {
        let out: Output = cmd.output().expect("flowrt runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The last JSON object printed on stdout (what scripts read).
    pub fn json(&self) -> Value {
        let start = self.stdout.rfind("\n{").map(|i| i + 1).unwrap_or(0);
        serde_json::from_str(&self.stdout[start..]).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Env {
    pub fn new() -> Self {
        Env {
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_env(args, &[])
    }

    /// [`Env::run`] with extra environment variables for the process.
    pub fn run_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        Run::of(
            Command::new(env!("CARGO_BIN_EXE_flowrt"))
                .args(args)
                .env("FLOWRT_HOME", self.home.path())
                .env_remove("FLOWRT_SERVER")
                .envs(vars.iter().copied()),
        )
    }

    /// Start flowrt in the background (stdout and stderr to files in the home folder, so a
    /// long run cannot block on a full pipe).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        let n = SPAWNED.fetch_add(1, Ordering::SeqCst);
        let out = std::fs::File::create(self.home.path().join(format!("spawn{n}.out"))).unwrap();
        let err = std::fs::File::create(self.home.path().join(format!("spawn{n}.err"))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(args)
            .env("FLOWRT_HOME", self.home.path())
            .env_remove("FLOWRT_SERVER")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("flowrt starts")
    }

    /// Write a connection YAML and create it.
    pub fn connection(&self, yaml: &str) {
        let file = self.home.path().join("conn.yaml");
        std::fs::write(&file, yaml).unwrap();
        let r = self.run(&["connection", "create", "--file", file.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        std::fs::remove_file(file).unwrap();
    }
}

/// A fixture flow folder copied into a temp dir (flows may write into their folder).
pub fn flow(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/flows")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    (dir, dst)
}

/// A fake OpenAI server: chat answers `echo: <last user message>` (or, when that message contains
/// `[[json]]`, the JSON text `{"echo": <message>}`), completion answers `echo: <prompt>`,
/// embeddings return `[0.6, 0.8]`, `GET /search` answers as SerpAPI does and
/// `/contentsafety/text:analyze` as Azure AI Content Safety does. The first
/// `fail_first` requests get a 429.
pub struct FakeOpenAi {
    pub base: String,
    pub requests: Arc<Mutex<Vec<(String, Value)>>>,
    /// Each request's credential: `Bearer TOKEN`, `api-key KEY`, or empty.
    pub credentials: Arc<Mutex<Vec<String>>>,
    pub hits: Arc<AtomicUsize>,
}

impl FakeOpenAi {
    pub fn start(fail_first: usize) -> Self {
        Self::start_with(fail_first, 0)
    }

    /// Like [`FakeOpenAi::start`], and besides every `fail_every`-th request (1-based; 0: none)
    /// gets a 429, as `fake_openai.py --fail-every N` does.
    pub fn start_failing_every(fail_every: usize) -> Self {
        Self::start_with(0, fail_every)
    }

    fn start_with(fail_first: usize, fail_every: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let credentials = Arc::new(Mutex::new(Vec::new()));
        let (reqs, count, creds) = (requests.clone(), hits.clone(), credentials.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(req) = read_request(&stream) else {
                    continue;
                };
                let credential = req
                    .header("authorization")
                    .map(str::to_string)
                    .or_else(|| req.header("api-key").map(|k| format!("api-key {k}")));
                creds.lock().unwrap().push(credential.unwrap_or_default());
                let (first, body) = (req.first, req.body);
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                // Routes are matched without the query (Azure's `?api-version=`).
                let route = path.split('?').next().unwrap_or("").to_string();
                let n = count.fetch_add(1, Ordering::SeqCst);
                reqs.lock().unwrap().push((path.clone(), body.clone()));
                if body["stream"] == json!(true)
                    && route.ends_with("/chat/completions")
                    && n >= fail_first
                {
                    // Streamed chat: the reply word by word as server-sent events.
                    let last = body["messages"]
                        .as_array()
                        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                        .map(|m| m["content"].as_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    let reply = format!("echo: {last}");
                    let mut events = String::new();
                    for piece in reply.split_inclusive(' ') {
                        let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
                        events.push_str(&format!("data: {chunk}\n\n"));
                    }
                    events.push_str("data: [DONE]\n\n");
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{events}",
                        events.len()
                    );
                    continue;
                }
                let (status, reply) = if n < fail_first
                    || (fail_every > 0 && (n + 1) % fail_every == 0)
                {
                    (
                        "429 Too Many Requests",
                        json!({"error": {"message": "slow down"}}),
                    )
                } else if route.ends_with("/chat/completions") {
                    let last = body["messages"]
                        .as_array()
                        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                        .map(|m| m["content"].as_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    let content = if last.contains("[[json]]") {
                        json!({ "echo": last }).to_string()
                    } else {
                        format!("echo: {last}")
                    };
                    (
                        "200 OK",
                        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}),
                    )
                } else if route.ends_with("/completions") {
                    let prompt = body["prompt"].as_str().unwrap_or("").to_string();
                    (
                        "200 OK",
                        json!({"choices": [{"index": 0, "text": format!("echo: {prompt}"), "finish_reason": "stop"}]}),
                    )
                } else if route.ends_with("/embeddings") {
                    (
                        "200 OK",
                        json!({"data": [{"index": 0, "embedding": [0.6, 0.8]}]}),
                    )
                } else if route == "/score" {
                    // An Azure ML online endpoint: LLaMa chat answers `output`, the rest `[{"0"}]`.
                    let input = &body["input_data"]["input_string"];
                    match input[0].get("content").and_then(Value::as_str) {
                        Some(_) => {
                            let last = input
                                .as_array()
                                .and_then(|m| m.last())
                                .map(|m| m["content"].clone());
                            (
                                "200 OK",
                                json!({"output": format!("echo: {}", last.unwrap_or_default().as_str().unwrap_or(""))}),
                            )
                        }
                        None => (
                            "200 OK",
                            json!([{"0": format!("echo: {}", input[0].as_str().unwrap_or(""))}]),
                        ),
                    }
                } else if route == "/contentsafety/text:analyze" {
                    // Content Safety (2023-10-01): severity 4 for Violence when the text says
                    // "fight", 0 otherwise; "blocked" matches a blocklist.
                    let text = body["text"].as_str().unwrap_or("");
                    let severity = |c: &str| {
                        if c == "Violence" && text.contains("fight") {
                            4
                        } else {
                            0
                        }
                    };
                    let blocklist: Vec<Value> = if text.contains("blocked") {
                        vec![json!({"blocklistName": "b", "blocklistItemText": "blocked"})]
                    } else {
                        Vec::new()
                    };
                    let analysis: Vec<Value> = ["Hate", "SelfHarm", "Sexual", "Violence"]
                        .iter()
                        .map(|c| json!({"category": c, "severity": severity(c)}))
                        .collect();
                    (
                        "200 OK",
                        json!({"blocklistsMatch": blocklist, "categoriesAnalysis": analysis}),
                    )
                } else if route == "/search" {
                    // SerpAPI: a key other than `serp-key` is refused as SerpAPI refuses it.
                    if path.contains("api_key=serp-key") {
                        ("200 OK", json!({"organic_results": [{"title": "echo"}]}))
                    } else {
                        ("401 Unauthorized", json!({"error": "Invalid API key."}))
                    }
                } else {
                    (
                        "404 Not Found",
                        json!({"error": {"message": "no such route"}}),
                    )
                };
                let text = reply.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeOpenAi {
            base,
            requests,
            credentials,
            hits,
        }
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// insta settings that replace run-to-run noise (temp paths, ports, times, durations, ids) with
/// stable placeholders, so snapshots hold only what users see. `paths` are replaced first, in
/// order, by their labels.
pub fn snapshot_settings(paths: &[(&Path, &str)]) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    for (path, label) in paths {
        let text = path.to_str().unwrap();
        let escaped: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '/' || c == '_' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect();
        settings.add_filter(&escaped, *label);
    }
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.add_filter(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?", "[TIME]");
    settings.add_filter(r"\b\d+(\.\d+)? (ms|s)\b", "[DURATION]");
    settings.add_filter(r"\b\d+m \d\ds\b", "[DURATION]");
    // A table right-aligns its durations: the padding before one depends on how long it took.
    // (A label's alignment, `duration:   `, is kept.)
    settings.add_filter(r"([^\s:])  +\[DURATION\]", "$1  [DURATION]");
    settings.add_filter(r"\bs-[0-9a-z]{6,}\b", "[SESSION]");
    settings.add_filter(r"\(os error \d+\)", "(os error [N])");
    settings
}

/// What a terminal shows: the exit code, then stdout, then stderr.
pub fn screen(r: &Run) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// Snapshot what a terminal shows for one command ([`screen`]), through [`snapshot_settings`],
/// so a case is one line: `flowrt_snapshot!("name", env.run(&[..]))`, or with paths to label,
/// `flowrt_snapshot!("name", env.run(&[..]), &[(dir.path(), "[TMP]")])`. The run is evaluated
/// once and returned, for the asserts a case may add.
#[macro_export]
macro_rules! flowrt_snapshot {
    ($name:expr, $run:expr) => {
        $crate::flowrt_snapshot!($name, $run, &[])
    };
    ($name:expr, $run:expr, $paths:expr) => {{
        let run: $crate::common::Run = $run;
        let paths: &[(&::std::path::Path, &str)] = $paths;
        $crate::common::snapshot_settings(paths).bind(|| {
            // The case's command as the snapshot's `expression`, to read in review.
            ::insta::assert_snapshot!($name, $crate::common::screen(&run), stringify!($run));
        });
        run
    }};
}

/// A path as the `&str` argument the CLI takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Write `rows` as JSON lines.
pub fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// A fresh, empty database on the PostgreSQL server `./scripts/test.sh` starts
/// (`FLOWRT_TEST_POSTGRES`), made with `psql`; its URL. `None` when no server is named, which
/// under CI is an error: the Postgres half of a test must not pass by being skipped.
#[allow(dead_code)]
pub fn fresh_postgres() -> Option<String> {
    let admin = match std::env::var("FLOWRT_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("FLOWRT_TEST_POSTGRES is not set; run the tests with ./scripts/test.sh")
        }
        _ => return None,
    };
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "flowrt_cli_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let out = std::process::Command::new("psql")
        .args([&admin, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "CREATE DATABASE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}

/// Read one HTTP request from `stream`: its request line and its JSON body (`null` if none).
fn read_json_request(stream: &std::net::TcpStream) -> Option<(String, Value)> {
    read_request(stream).map(|r| (r.first, r.body))
}

/// One HTTP request as a fake server read it.
pub struct ReadRequest {
    /// The request line (`POST /path HTTP/1.1`).
    pub first: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl ReadRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &std::net::TcpStream) -> Option<ReadRequest> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut len = 0usize;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                len = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    Some(ReadRequest {
        first,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

/// A managed identity endpoint as App Service and Azure ML computes give one
/// (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`): a `GET` with the secret header and the `resource`
/// gets a token; anything else a 400. Records each request line.
pub struct FakeIdentityEndpoint {
    /// The `IDENTITY_ENDPOINT` URL.
    pub url: String,
    /// The `IDENTITY_HEADER` secret it checks.
    pub secret: String,
    /// The token it hands out.
    pub token: String,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FakeIdentityEndpoint {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/msi/token", listener.local_addr().unwrap());
        let secret = "identity-header-secret".to_string();
        let token = format!("entra-token-{}", std::process::id());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (expected, issued, seen) = (secret.clone(), token.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(req) = read_request(&stream) else {
                    continue;
                };
                seen.lock().unwrap().push(req.first.trim().to_string());
                let good = req.first.starts_with("GET /msi/token?")
                    && req
                        .first
                        .contains("resource=https%3A%2F%2Fcognitiveservices.azure.com")
                    && req.header("x-identity-header") == Some(expected.as_str());
                let expires = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    + 3600;
                let (status, reply) = if good {
                    (
                        "200 OK",
                        json!({"access_token": issued, "expires_on": expires.to_string(),
                               "resource": "https://cognitiveservices.azure.com", "token_type": "Bearer"}),
                    )
                } else {
                    ("400 Bad Request", json!({"error": "bad_request"}))
                };
                let text = reply.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeIdentityEndpoint {
            url,
            secret,
            token,
            requests,
        }
    }

    /// The variables that point a process at this endpoint.
    pub fn vars(&self) -> [(&str, &str); 2] {
        [
            ("IDENTITY_ENDPOINT", self.url.as_str()),
            ("IDENTITY_HEADER", self.secret.as_str()),
        ]
    }
}

/// A model deployment with a quota, as Azure OpenAI enforces one: requests (`rpm`) and tokens
/// (`tpm`, a request costing its prompt's words plus its `max_tokens`) a minute, each a token
/// bucket holding one second's worth. A request over either gets 429 with `Retry-After` and
/// `retry-after-ms` (the time until the bucket has room). Every reply waits `latency`. Chat
/// answers `echo: <last user message>`. Connections are served concurrently.
pub struct QuotaOpenAi {
    pub base: String,
    pub stats: Arc<Mutex<QuotaStats>>,
}

#[derive(Clone, Debug, Default)]
pub struct QuotaStats {
    pub requests: usize,
    pub rate_limited: usize,
    /// The number (1-based) of the first request refused.
    pub first_refused: Option<usize>,
}

struct Bucket {
    per_s: f64,
    level: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn new(per_minute: f64) -> Bucket {
        let per_s = per_minute / 60.0;
        Bucket {
            per_s,
            level: per_s.max(1.0),
            at: std::time::Instant::now(),
        }
    }

    /// Take `cost`; else the seconds until there is room.
    fn take(&mut self, cost: f64) -> Option<f64> {
        let now = std::time::Instant::now();
        let cap = self.per_s.max(cost);
        self.level = (self.level + now.duration_since(self.at).as_secs_f64() * self.per_s).min(cap);
        self.at = now;
        if self.level >= cost {
            self.level -= cost;
            None
        } else {
            Some((cost - self.level) / self.per_s)
        }
    }
}

impl QuotaOpenAi {
    pub fn start(rpm: Option<f64>, tpm: Option<f64>, latency: std::time::Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stats = Arc::new(Mutex::new(QuotaStats::default()));
        let buckets = Arc::new(Mutex::new((rpm.map(Bucket::new), tpm.map(Bucket::new))));
        let counted = stats.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (stats, buckets) = (counted.clone(), buckets.clone());
                std::thread::spawn(move || quota_reply(stream, &stats, &buckets, latency));
            }
        });
        QuotaOpenAi { base, stats }
    }

    pub fn stats(&self) -> QuotaStats {
        self.stats.lock().unwrap().clone()
    }
}

fn quota_reply(
    mut stream: std::net::TcpStream,
    stats: &Mutex<QuotaStats>,
    buckets: &Mutex<(Option<Bucket>, Option<Bucket>)>,
    latency: std::time::Duration,
) {
    let Some((_, body)) = read_json_request(&stream) else {
        return;
    };
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let tokens =
        last.split_whitespace().count() as f64 + body["max_tokens"].as_f64().unwrap_or(16.0);
    let refused = {
        let mut b = buckets.lock().unwrap();
        let mut s = stats.lock().unwrap();
        s.requests += 1;
        // Both quotas must have room; neither is charged for a refused request.
        let wait_r = b.0.as_mut().and_then(|r| r.take(1.0));
        let wait_t = match wait_r {
            Some(_) => None,
            None => b.1.as_mut().and_then(|t| t.take(tokens)),
        };
        if let (None, Some(_)) = (wait_r, wait_t) {
            // Give back the request taken above: the request was not served.
            if let Some(r) = b.0.as_mut() {
                r.level += 1.0;
            }
        }
        let wait = wait_r.or(wait_t);
        if wait.is_some() {
            s.rate_limited += 1;
            s.first_refused = s.first_refused.or(Some(s.requests));
        }
        wait
    };
    let (status, reply, extra) = match refused {
        Some(wait) => (
            "429 Too Many Requests",
            json!({"error": {"message": "Requests to this deployment have exceeded its rate limit.", "type": "rate_limit_exceeded", "code": "429"}}),
            format!(
                "retry-after: {}\r\nretry-after-ms: {}\r\n",
                wait.ceil().max(1.0),
                (wait * 1000.0) as u64 + 1
            ),
        ),
        None => {
            std::thread::sleep(latency);
            (
                "200 OK",
                json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {last}")}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}),
                String::new(),
            )
        }
    };
    let text = reply.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// Every file under `dir` that holds `needle` (a secret that must not be written anywhere).
pub fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .map(|b| memchr::memmem::find(&b, needle.as_bytes()).is_some())
                .unwrap_or(false)
            {
                found.push(path);
            }
        }
    }
    found
}

/// An OTLP/HTTP JSON collector on 127.0.0.1 that keeps the body of every POST to `/v1/traces`.
pub fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let mut length = 0usize;
            let mut first = true;
            let mut path_ok = false;
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if first {
                    path_ok = line.starts_with("POST /v1/traces ");
                    first = false;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            if path_ok {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    sink.lock().unwrap().push(v);
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}",
            );
        }
    });
    (base, got)
}
