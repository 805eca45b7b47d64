//! The one harness for story tests that need a real server: `flowrt server` on a free port of
//! 127.0.0.1 with a FLOWRT_HOME of its own (or the test's), the CLI pointed at it, and JSON calls
//! with a token. [`Server::builder`] takes what a story needs besides: arguments, environment
//! variables, a database, where the log goes, a launcher, how it ends. Dropping it ends the
//! server and every session agent of its home.

use super::http::{self, Reply};
use super::{free_port, Env, Run};
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a [`Server`] is started; kept for its restarts.
#[derive(Clone)]
pub struct Builder {
    home: Option<PathBuf>,
    args: Vec<OsString>,
    vars: Vec<(OsString, OsString)>,
    database: Option<String>,
    log: Option<PathBuf>,
    idle_check: Option<String>,
    launcher: Vec<OsString>,
    stop_on_drop: bool,
}

impl Builder {
    /// Serve `home` (which the test keeps: it outlives the server, and a restart finds it as it
    /// was) instead of a temp home of the server's own.
    pub fn home(mut self, home: &Path) -> Builder {
        self.home = Some(home.to_path_buf());
        self
    }

    /// More arguments for `flowrt server`.
    pub fn args(mut self, args: &[&str]) -> Builder {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// One argument that may not be UTF-8 (a path).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Builder {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// An environment variable for the server process.
    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Builder {
        self.vars.push((name.into(), value.as_ref().to_owned()));
        self
    }

    /// The store on this database (`--database URL`) rather than SQLite in the home.
    pub fn database(mut self, url: &str) -> Builder {
        self.database = Some(url.to_string());
        self
    }

    /// The server's stderr to `path` rather than `server.log` in its home.
    pub fn log(mut self, path: &Path) -> Builder {
        self.log = Some(path.to_path_buf());
        self
    }

    /// `--idle-check-interval`: 0.2 s unless set here; `None` leaves the server's default.
    pub fn idle_check(mut self, seconds: Option<&str>) -> Builder {
        self.idle_check = seconds.map(str::to_string);
        self
    }

    /// Run the server through `launcher` (a program and its arguments, the flowrt binary and
    /// its arguments after them), which must exec it: the pid is the server's.
    pub fn launcher(mut self, launcher: Vec<OsString>) -> Builder {
        self.launcher = launcher;
        self
    }

    /// Dropped, stop the server (SIGTERM, and wait) rather than kill it, as sessions.rs and
    /// ui.rs always ended theirs. It costs seconds when the server is young (it finishes
    /// copying the base environment into its home first): authoring.rs ran about 60% longer
    /// with every server stopped, so the others are killed.
    pub fn stop_on_drop(mut self) -> Builder {
        self.stop_on_drop = true;
        self
    }

    /// Start it and wait until it answers `/healthz`; fails the test with its log if it does not.
    pub fn start(self) -> Server {
        self.try_start()
            .unwrap_or_else(|log| panic!("the server exited before serving: {log}"))
    }

    /// [`Builder::start`], but a server that exits before serving is an `Err` with its log
    /// (a refusal a test expects).
    pub fn try_start(self) -> Result<Server, String> {
        let (home, owned) = match &self.home {
            Some(home) => (home.clone(), None),
            None => {
                let env = Env::new();
                (env.home.path().to_path_buf(), Some(env))
            }
        };
        let log = self.log.clone().unwrap_or_else(|| home.join("server.log"));
        let mut server = Server {
            url: format!("http://127.0.0.1:{}", free_port()),
            home,
            log,
            child: None,
            spec: self,
            _owned: owned,
        };
        server.spawn()?;
        Ok(server)
    }
}

pub struct Server {
    pub url: String,
    home: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    spec: Builder,
    /// The temp home, when the server made its own: removed after the server stops.
    _owned: Option<Env>,
}

impl Server {
    /// A server on a temp home of its own, with no more than the harness's defaults.
    pub fn start() -> Server {
        Server::builder().start()
    }

    pub fn builder() -> Builder {
        Builder {
            home: None,
            args: Vec::new(),
            vars: Vec::new(),
            database: None,
            log: None,
            idle_check: Some("0.2".into()),
            launcher: Vec::new(),
            stop_on_drop: false,
        }
    }

    /// Start the process on this server's address and wait for `/healthz`; its log (the file is
    /// started afresh) if it exits first.
    fn spawn(&mut self) -> Result<(), String> {
        let addr = self.url.trim_start_matches("http://").to_string();
        let spec = &self.spec;
        let mut cmd = match spec.launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_flowrt"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_flowrt")),
        };
        cmd.args(["server", "--addr", &addr]);
        if let Some(seconds) = &spec.idle_check {
            cmd.args(["--idle-check-interval", seconds]);
        }
        cmd.args(&spec.args);
        if let Some(url) = &spec.database {
            cmd.args(["--database", url]);
        }
        cmd.env("FLOWRT_HOME", &self.home)
            .envs(spec.vars.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&self.log).unwrap()));
        // Kept before waiting, so a server that never comes up is still stopped on the way out.
        let child = self.child.insert(cmd.spawn().unwrap());
        let health = format!("{}/healthz", self.url);
        let t = Instant::now();
        while !http::answers(&health) {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return Err(self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stop the server (SIGTERM, then SIGKILL if it has not gone within 30 s); its agents keep
    /// running, as they do when a server is restarted.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let t = Instant::now();
            while let Ok(None) = child.try_wait() {
                if t.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.wait();
        }
    }

    /// SIGKILL the server: no shutdown, no lease handed back. Its agents keep running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again (stopping it first if it runs) as it was started, on the same
    /// address and home.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!("the server exited before serving: {log}");
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The server's pid (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The CLI with this server's home and address, not started yet.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flowrt"));
        c.args(args)
            .env("FLOWRT_HOME", &self.home)
            .env("FLOWRT_SERVER", &self.url);
        c
    }

    /// The CLI as the owner (the home's owner token).
    pub fn cli(&self, args: &[&str]) -> Run {
        Run::of(&mut self.cmd(args))
    }

    /// The CLI as the user whose API token is `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Run {
        Run::of(self.cmd(args).env("FLOWRT_TOKEN", token))
    }

    /// [`Server::cli`], which must succeed.
    pub fn ok(&self, args: &[&str]) -> Run {
        self.succeeded(self.cli(args), args)
    }

    /// [`Server::cli_as`], which must succeed.
    pub fn ok_as(&self, token: &str, args: &[&str]) -> Run {
        self.succeeded(self.cli_as(token, args), args)
    }

    /// `r`, once it is known to have succeeded; else what it said, with the server's log.
    fn succeeded(&self, r: Run, args: &[&str]) -> Run {
        assert_eq!(
            r.code,
            0,
            "flowrt {args:?}:\n{}\n{}\nserver log:\n{}",
            r.stdout,
            r.stderr,
            self.log()
        );
        r
    }

    /// The owner's API token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.home.join("owner.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// What the server wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `method path` with the owner's token and a JSON `body`: the status and the answer
    /// parsed (`null` when it is no JSON).
    pub fn api(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.api_as(&format!("Bearer {}", self.token()), method, path, body)
    }

    /// [`Server::api`] with `auth` as the whole Authorization value (`Bearer TOKEN`; sent even
    /// when empty).
    pub fn api_as(&self, auth: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
        let r = self.request_as(auth, method, path, body);
        (r.status, r.json())
    }

    /// `method path` with `auth` (the whole Authorization value) and a JSON `body`: the whole
    /// answer, headers too.
    pub fn request_as(&self, auth: &str, method: &str, path: &str, body: &str) -> Reply {
        http::request(
            method,
            &format!("{}{path}", self.url),
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body,
        )
    }

    /// The session ids in this server's home.
    fn session_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.home.join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server first, so that it starts no agent again (a deployment's instances); killed
        // unless the test asked otherwise ([`Builder::stop_on_drop`]). Then every agent still
        // listening is asked to stop (and left to clean up after itself); what of a session
        // does not answer is killed.
        if self.spec.stop_on_drop {
            self.stop();
        } else {
            self.kill();
        }
        let sessions = self.home.join("sessions");
        for id in self.session_ids() {
            if !shutdown_agent(&sessions.join(&id)) {
                kill_session(&id);
            }
        }
    }
}

/// Ask the agent of the session folder `dir` to shut down; whether it took the request (an
/// agent that stopped left its address behind).
fn shutdown_agent(dir: &Path) -> bool {
    let Ok(addr) = std::fs::read_to_string(dir.join("agent.addr")) else {
        return false;
    };
    let token = std::fs::read_to_string(dir.join("agent.token")).unwrap_or_default();
    http::try_request(
        "POST",
        &format!("http://{}/shutdown", addr.trim()),
        &[("authorization", &format!("Bearer {}", token.trim()))],
        "",
    )
    .is_ok_and(|r| r.status < 300)
}

/// SIGKILL every process of a session (its agent and what it started).
pub fn kill_session(session_id: &str) {
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &format!("session-id {session_id} ")])
        .status();
}
