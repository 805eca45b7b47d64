//! Where sessions run. `LocalBackend` starts each session as a `flowrt agent` process on this
//! machine: its own working folder, its own process group (so it survives a server restart and
//! can be re-adopted), a scrubbed environment and resource limits for its size.

use crate::client;
use flowrt_api::{SessionSize, SizeLimits};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What an agent needs to start.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub session_id: String,
    pub flow_dir: PathBuf,
    pub python: PathBuf,
    /// `<FLOWRT_HOME>/sessions/<id>/`.
    pub workdir: PathBuf,
    pub size: SessionSize,
    /// The flowrt binary to run as the agent.
    pub exe: PathBuf,
    /// Seconds between long-running node warnings.
    pub long_running_interval: f64,
    /// The connections the flow uses, as a JSON list, written to the agent's stdin.
    pub connections: SecretText,
    /// Seal the agent (Landlock) to its folder, its Python and the system.
    pub seal: bool,
    /// Seconds without a run after which the agent exits by itself (0: never).
    pub idle_exit_s: f64,
    /// The user the session runs as (its folder is handed to it), when the server gives each
    /// session one of its own.
    pub uid: Option<u32>,
}

/// Text that holds secrets: shown as `******` by `Debug`, so a logged spec leaks nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("******")
    }
}

/// A running agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentHandle {
    pub pid: u32,
    pub addr: String,
    /// The bearer token the agent requires (from its `agent.token`).
    pub token: String,
}

/// The file holding an agent's bearer token (mode 0600, in the session folder).
pub const TOKEN_FILE: &str = "agent.token";

/// Give session folder `dir` and everything in it to user and group `uid` (links themselves,
/// never what they point to), all but the agent's token file; `dir` itself only its owner may
/// enter.
pub fn hand_over(dir: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    crate::session_files::hand_over(dir, uid, TOKEN_FILE)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The token of the agent in `workdir` ("" when there is none), read without following a link:
/// only for an agent started before the server kept its agents' tokens itself.
pub fn read_token(workdir: &Path) -> String {
    crate::session_files::read_small(workdir, TOKEN_FILE, 256)
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// `n` random bytes as hex (from the kernel).
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh random token, written where only this user can read it. Agents listen on 127.0.0.1,
/// which other local users can reach too: every agent request must carry it.
pub fn new_token(workdir: &Path) -> std::io::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = workdir.join(TOKEN_FILE);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot prepare the session folder {}: {source}", path.display())]
    Workdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the agent {}: {source}", exe.display())]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent exited while starting ({status}); last log lines:\n{log_tail}")]
    Exited { status: String, log_tail: String },
    #[error("the agent did not become ready within {seconds} s; last log lines:\n{log_tail}")]
    NotReady { seconds: f64, log_tail: String },
    /// The Ray cluster refused or failed the session's job (its reason as Ray gives it).
    #[error("{0}")]
    Ray(String),
}

/// Variables an agent may inherit: nothing that could carry the server's secrets.
pub(crate) const PASSED_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The last `n` lines of the agent's log.
pub fn log_tail(workdir: &Path, n: usize) -> String {
    // The log is in the session's folder: read without following a link, and only its end.
    let text = crate::session_files::read_tail(workdir, "agent.log", 256 * 1024)
        .map(|(bytes, _)| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Is `pid` a live (not zombie) process?
pub fn is_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s != "Z")
}

/// The agent's `/health`, if it answers as the agent of `session_id`.
pub async fn health(addr: &str, token: &str, session_id: &str) -> Option<client::AgentHealth> {
    client::health(addr, token)
        .await
        .ok()
        .filter(|h| h.session_id == session_id)
}

/// How an agent process ended, in words.
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(9)) => "killed by signal 9 (SIGKILL)".into(),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// Starts agents as local processes.
/// Ask an agent to stop (its runs end, finished lines kept); it exits by itself.
pub async fn ask_to_stop(handle: &AgentHandle) {
    let _ = client::shutdown(&handle.addr, &handle.token).await;
}

#[derive(Clone, Debug, Default)]
pub struct LocalBackend;

impl LocalBackend {
    /// Start the agent and wait until it answers `/health`. The returned child is the caller's to
    /// wait on (its exit is how a crash is noticed).
    pub async fn start(
        &self,
        spec: &AgentSpec,
        ready_timeout: Duration,
    ) -> Result<(AgentHandle, tokio::process::Child), BackendError> {
        let wd = &spec.workdir;
        std::fs::create_dir_all(wd).map_err(|e| BackendError::Workdir {
            path: wd.clone(),
            source: e,
        })?;
        let addr_file = wd.join("agent.addr");
        let _ = std::fs::remove_file(&addr_file);
        let token = new_token(wd).map_err(|e| BackendError::Workdir {
            path: wd.join(TOKEN_FILE),
            source: e,
        })?;
        let log =
            crate::session_files::append(wd, "agent.log").map_err(|e| BackendError::Workdir {
                path: wd.clone(),
                source: e,
            })?;
        let log2 = log.try_clone().map_err(|e| BackendError::Workdir {
            path: wd.clone(),
            source: e,
        })?;
        let limits = spec.size.limits();
        let mut cmd = tokio::process::Command::new(&spec.exe);
        cmd.arg("agent")
            .arg("--session-id")
            .arg(&spec.session_id)
            .arg("--flow")
            .arg(&spec.flow_dir)
            .arg("--python")
            .arg(&spec.python)
            .arg("--workers")
            .arg(limits.workers.to_string())
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--token-file")
            .arg(wd.join(TOKEN_FILE))
            .arg("--long-running-interval")
            .arg(spec.long_running_interval.to_string())
            .arg("--idle-exit")
            .arg(spec.idle_exit_s.to_string())
            .arg("--connections-stdin")
            .current_dir(wd)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        for key in PASSED_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        if spec.seal {
            cmd.arg("--seal");
        }
        // The session's own folder is its home and its temp: never the server's.
        let tmp = wd.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| BackendError::Workdir {
            path: tmp.clone(),
            source: e,
        })?;
        cmd.env("HOME", wd)
            .env("FLOWRT_HOME", wd)
            .env("TMPDIR", &tmp);
        if let Some(uid) = spec.uid {
            // The folder becomes the session user's, all but the agent's token, which the agent
            // reads before it becomes that user: its code never can.
            hand_over(wd, uid).map_err(|e| BackendError::Workdir {
                path: wd.clone(),
                source: e,
            })?;
            cmd.arg("--run-as-uid").arg(uid.to_string());
        }
        apply_limits(&mut cmd, limits);
        let mut child = cmd.spawn().map_err(|e| BackendError::Spawn {
            exe: spec.exe.clone(),
            source: e,
        })?;
        let pid = child.id().unwrap_or(0);
        // Before the agent starts any process (it waits for its connections on stdin first), so
        // its whole process tree is inside.
        let groups = cgroups::place(&spec.session_id, pid, limits);
        if !groups.is_empty() {
            use std::io::Write;
            if let Ok(mut f) = crate::session_files::append(wd, "agent.log") {
                // What is enforced, not where: the log is the session owner's to read.
                let _ = writeln!(
                    f,
                    "limits: {} MiB of memory, {} processes (kernel cgroups)",
                    limits.memory_mib, limits.processes
                );
            }
        }
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            // A pipe only the server holds: the secrets never touch the session folder.
            let _ = stdin.write_all(spec.connections.0.as_bytes()).await;
        }
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BackendError::Exited {
                    status: describe_exit(&status),
                    log_tail: log_tail(wd, 20),
                });
            }
            if let Ok(text) = crate::session_files::read_small(wd, "agent.addr", 256) {
                let addr = text.trim().to_string();
                if health(&addr, &token, &spec.session_id).await.is_some() {
                    return Ok((AgentHandle { pid, addr, token }, child));
                }
            }
            if started.elapsed() > ready_timeout {
                let _ = child.start_kill();
                return Err(BackendError::NotReady {
                    seconds: ready_timeout.as_secs_f64(),
                    log_tail: log_tail(wd, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ask the agent to stop, then make sure it did.
    pub async fn stop(&self, handle: &AgentHandle) {
        ask_to_stop(handle).await;
        let t = Instant::now();
        while is_alive(handle.pid) && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if is_alive(handle.pid) {
            // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
            unsafe {
                libc::kill(handle.pid as libc::pid_t, libc::SIGKILL);
            }
        }
        self.kill_group(handle.pid);
    }

    /// End whatever is left of an agent's session: its batch runs and Python workers share the
    /// agent's process group (it called setsid), and outlive a killed agent unless ended here.
    pub fn kill_group(&self, agent_pid: u32) {
        let Ok(pgid) = libc::pid_t::try_from(agent_pid) else {
            return;
        };
        if pgid <= 1 {
            return;
        }
        // SAFETY: killpg(2) with a process group id and a signal number has no memory-safety
        // preconditions; a group that no longer exists gives ESRCH, which is ignored.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }

    /// Remove the session's cgroups once its processes are gone: what is left in them is killed
    /// (`cgroup.kill`) and the groups removed as soon as they are empty, off the caller's thread
    /// (a killed agent's workers take a moment to die).
    pub fn release(&self, session_id: &str) {
        let id = session_id.to_string();
        let _ = std::thread::Builder::new()
            .name(format!("release {id}"))
            .spawn(move || cgroups::remove(&id));
    }

    /// Remove the groups of sessions whose processes are all gone (left by a server that stopped
    /// before its agents did). A group that still holds a process cannot be removed, so running
    /// agents keep theirs. Call before starting any session.
    pub fn sweep(&self) {
        cgroups::sweep();
    }
}

/// Detach the agent into its own session and apply the size's limits in the child before exec.
fn apply_limits(cmd: &mut tokio::process::Command, limits: SizeLimits) {
    let memory = limits.memory_mib.saturating_mul(1024 * 1024);
    let files = limits.open_files;
    // RLIMIT_NPROC is per user, not per process tree: on a developer's machine it would count
    // their other processes too, so process counts are left to cgroups.
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // operations are allowed. It calls setsid(2) and setrlimit(2), which are plain system calls
    // that neither allocate nor take locks, on values computed before the fork; it touches no
    // shared state of the parent.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            for (resource, value) in [(libc::RLIMIT_AS, memory), (libc::RLIMIT_NOFILE, files)] {
                let lim = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Resource control groups, where the machine lets us write them: memory and process limits that,
/// unlike rlimits, cover the agent's whole process tree. cgroup v2 (unified) or v1 (per
/// controller); a machine where neither is writable gets rlimits only.
mod cgroups {
    use flowrt_api::SizeLimits;
    use std::path::PathBuf;

    const ROOT: &str = "/sys/fs/cgroup";

    /// (group folder, [(file, value)]) for each hierarchy to use.
    fn plans(session_id: &str, limits: SizeLimits) -> Vec<(PathBuf, Vec<(&'static str, String)>)> {
        let memory = (limits.memory_mib * 1024 * 1024).to_string();
        let pids = limits.processes.to_string();
        let root = PathBuf::from(ROOT);
        if root.join("cgroup.controllers").is_file() {
            // v2 mounted at the root.
            return vec![(
                root.join("flowrt").join(session_id),
                vec![("memory.max", memory), ("pids.max", pids)],
            )];
        }
        vec![
            (
                root.join("memory/flowrt").join(session_id),
                vec![("memory.limit_in_bytes", memory)],
            ),
            (
                root.join("pids/flowrt").join(session_id),
                vec![("pids.max", pids)],
            ),
        ]
    }

    /// Put `pid` into the session's groups; returns the groups it is in.
    pub fn place(session_id: &str, pid: u32, limits: SizeLimits) -> Vec<String> {
        let mut placed = Vec::new();
        for (dir, files) in plans(session_id, limits) {
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            if let Some(parent) = dir.parent() {
                // v2 needs the controllers enabled for the children of the parent.
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids");
            }
            for (file, value) in &files {
                let _ = std::fs::write(dir.join(file), value);
            }
            if std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok() {
                placed.push(dir.display().to_string());
            }
        }
        placed
    }

    pub fn sweep() {
        let root = PathBuf::from(ROOT);
        for parent in [
            root.join("flowrt"),
            root.join("memory/flowrt"),
            root.join("pids/flowrt"),
        ] {
            let Ok(entries) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("s-") {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }

    /// Kill what is left in the session's groups and remove them once empty (within 5 s).
    pub fn remove(session_id: &str) {
        let none = SizeLimits {
            memory_mib: 0,
            open_files: 0,
            processes: 0,
            workers: 0,
        };
        for (dir, _) in plans(session_id, none) {
            if !dir.is_dir() {
                continue;
            }
            // v2 (5.14+): one write ends every process of the group.
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}
