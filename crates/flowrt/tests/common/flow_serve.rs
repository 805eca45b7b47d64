//! `flowrt flow serve` as a test runs it: on a free port of 127.0.0.1, healthy before the test
//! goes on, killed when dropped.

use super::{free_port, http, Env};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct FlowServe {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl FlowServe {
    /// Serve `flow` (a folder or a `.prompty` file) with `env`'s home; returns once `/health`
    /// answers 200.
    pub fn start(env: &Env, flow: &Path) -> FlowServe {
        let log = env.home.path().join("flow-serve.log");
        // A free port may be taken by another test's server before this one binds it: then this
        // server exits, and the health check would reach the other one. Try again on another
        // port.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(env!("CARGO_BIN_EXE_flowrt"))
                .arg("flow")
                .arg("serve")
                .arg(flow)
                .args(["--port", &port.to_string()])
                .env("FLOWRT_HOME", env.home.path())
                .env_remove("FLOWRT_SERVER")
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
                .spawn()
                .unwrap();
            let base = format!("http://127.0.0.1:{port}");
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken
                }
                if http::answers(&format!("{base}/health"))
                    && child.try_wait().is_ok_and(|s| s.is_none())
                {
                    return FlowServe { child, base };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "flow serve did not become healthy: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `POST /score` with `body` and `headers`.
    pub fn score(&self, headers: &[(&str, &str)], body: &str) -> http::Reply {
        http::request("POST", &format!("{}/score", self.base), headers, body)
    }
}

impl Drop for FlowServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
