//! The one harness for story tests that need a real server: `flowrt server` on a free port of
//! 127.0.0.1 with a private FLOWRT_HOME, the CLI pointed at it, and JSON calls with its owner's
//! token. Dropping it stops the server and every session agent it started.

use super::{free_port, http, Env, Run};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub env: Env,
    pub url: String,
}

impl Server {
    pub fn start() -> Server {
        let env = Env::new();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(["server", "--addr", &addr, "--idle-check-interval", "0.2"])
            .env("FLOWRT_HOME", env.home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(env.home.path().join("server.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        // Made before waiting, so a server that never comes up is still killed on the way out.
        let server = Server {
            child,
            env,
            url: format!("http://{addr}"),
        };
        let t = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err()
            || http("GET", &format!("{}/healthz", server.url), &[], "").0 != 200
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "server did not start: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn cli(&self, args: &[&str]) -> Run {
        self.env
            .run_with_env(args, &[("FLOWRT_SERVER", self.url.as_str())])
    }

    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.cli(args);
        assert_eq!(r.code, 0, "flowrt {args:?}: {}\n{}", r.stderr, self.log());
        r
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.env.home.path().join("owner.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.env.home.path().join("server.log")).unwrap_or_default()
    }

    pub fn api(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let token = format!("Bearer {}", self.token());
        let (status, _, text) = http(
            method,
            &format!("{}{path}", self.url),
            &[
                ("authorization", &token),
                ("content-type", "application/json"),
            ],
            body,
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Agents stop when their session folders go with the home.
        let sessions = self.env.home.path().join("sessions");
        if let Ok(dir) = std::fs::read_dir(&sessions) {
            for e in dir.flatten() {
                kill_session(&e.file_name().to_string_lossy());
            }
        }
    }
}

/// SIGKILL every process of a session (its agent and what it started).
pub fn kill_session(session_id: &str) {
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &format!("session-id {session_id} ")])
        .status();
}
