//! Content-addressed Python environments built with `uv`.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Version of flowrt's base environment; part of every environment key.
const BASE_VERSION: &str = "1";
/// Name of the marker file written last into a finished environment.
const READY_MARKER: &str = ".flowrt-ready";
/// How many trailing lines of uv's stderr an error carries.
const ERROR_TAIL_LINES: usize = 30;

/// What environment a flow needs.
#[derive(Clone, Copy, Debug)]
pub struct EnvRequest<'a> {
    /// The flow's `requirements.txt`, if it has one.
    pub requirements: Option<&'a Path>,
    /// `FLOWRT_HOME`; environments live in `<flowrt_home>/envs/<key>/`.
    pub flowrt_home: &'a Path,
}

/// Why an environment could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("cannot read requirements file {}: {source}", path.display())]
    ReadRequirements {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {} to read its version: {message}", python.display())]
    Python { python: PathBuf, message: String },
    #[error("uv is not available and installing it failed: {message}")]
    UvMissing { message: String },
    #[error("filesystem error at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the virtual environment {} with uv: {stderr_tail}", path.display())]
    Venv { path: PathBuf, stderr_tail: String },
    #[error("installing the requirements of {} failed:\n{stderr_tail}", requirements.display())]
    Install {
        requirements: PathBuf,
        stderr_tail: String,
    },
}

/// The interpreter used when a flow has no requirements: `$FLOWRT_PYTHON`, else `python3` on PATH.
pub fn default_python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOWRT_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    find_on_path("python3").unwrap_or_else(|| PathBuf::from("python3"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The requirements file split into what identifies an environment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Requirements {
    /// Requirement lines: comments and blank lines removed, trimmed, order kept.
    pub(crate) lines: Vec<String>,
    /// `-i` / `--index-url` / `--extra-index-url` lines.
    pub(crate) index: Vec<String>,
}

pub(crate) fn normalize_requirements(text: &str) -> Requirements {
    let mut lines = Vec::new();
    let mut index = Vec::new();
    for raw in text.lines() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let is_index = ["-i", "--index-url", "--extra-index-url"]
            .iter()
            .any(|flag| {
                line == *flag
                    || line.starts_with(&format!("{flag} "))
                    || line.starts_with(&format!("{flag}="))
                    || line.starts_with(&format!("{flag}\t"))
            });
        if is_index {
            index.push(line.to_string());
        } else {
            lines.push(line.to_string());
        }
    }
    Requirements { lines, index }
}

/// pip's rule: `#` at the start of a line or preceded by whitespace starts a comment.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

pub(crate) fn env_key(python_version: &str, req: &Requirements) -> String {
    let mut hasher = Sha256::new();
    for part in [
        "flowrt-env",
        BASE_VERSION,
        python_version.trim(),
        &req.lines.join("\n"),
        &req.index.join("\n"),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    // 128 bits keep paths short (venv scripts carry the path in their shebang line).
    hex::encode(&hasher.finalize()[..16])
}

/// Replace credentials in URLs (`scheme://user:secret@host`) by `****`.
pub(crate) fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("//") {
        let (head, tail) = rest.split_at(pos + 2);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("****");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Return the interpreter for the request, building `<flowrt_home>/envs/<key>/` with `uv` when the
/// flow has requirements. A built key is reused instantly; concurrent builds of one key wait on a
/// file lock. `progress` receives one-line status messages.
pub fn ensure_env(
    req: EnvRequest<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, EnvError> {
    let Some(path) = req.requirements else {
        return Ok(default_python());
    };
    if !path.is_file() {
        return Ok(default_python());
    }
    let text = fs_err::read_to_string(path).map_err(|source| EnvError::ReadRequirements {
        path: path.to_path_buf(),
        source,
    })?;
    let normalized = normalize_requirements(&text);
    if normalized.lines.is_empty() {
        return Ok(default_python());
    }
    let base_python = default_python();
    let version = python_version(&base_python)?;
    let key = env_key(&version, &normalized);
    let envs = req.flowrt_home.join("envs");
    let env_dir = envs.join(&key);
    let env_python = env_dir.join("bin").join("python");
    if env_dir.join(READY_MARKER).is_file() {
        return Ok(env_python);
    }
    fs_err::create_dir_all(&envs).map_err(|source| EnvError::Io {
        path: envs.clone(),
        source,
    })?;
    let lock_path = envs.join(format!("{key}.lock"));
    let _lock = FileLock::acquire(&lock_path, progress)?;
    if env_dir.join(READY_MARKER).is_file() {
        return Ok(env_python);
    }
    if env_dir.exists() {
        progress("removing an unfinished environment build");
        fs_err::remove_dir_all(&env_dir).map_err(|source| EnvError::Io {
            path: env_dir.clone(),
            source,
        })?;
    }
    let uv = find_or_install_uv(&base_python, progress)?;
    progress(&format!(
        "creating environment {key} (python {})",
        version.split_whitespace().next().unwrap_or(&version)
    ));
    let out = uv
        .command()
        .arg("venv")
        .arg("--python")
        .arg(&base_python)
        .arg(&env_dir)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnvError::Venv {
            path: env_dir.clone(),
            stderr_tail: format!("cannot run uv: {e}"),
        })?;
    if !out.status.success() {
        return Err(EnvError::Venv {
            path: env_dir,
            stderr_tail: tail(&out),
        });
    }
    progress(&format!(
        "installing {} requirement(s) from {}",
        normalized.lines.len(),
        path.display()
    ));
    let out = uv
        .command()
        .args(["pip", "install", "--python"])
        .arg(&env_python)
        .arg("-r")
        .arg(path)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnvError::Install {
            requirements: path.to_path_buf(),
            stderr_tail: format!("cannot run uv: {e}"),
        })?;
    if !out.status.success() {
        return Err(EnvError::Install {
            requirements: path.to_path_buf(),
            stderr_tail: tail(&out),
        });
    }
    let marker = env_dir.join(READY_MARKER);
    fs_err::write(&marker, format!("{version}\n")).map_err(|source| EnvError::Io {
        path: marker,
        source,
    })?;
    progress(&format!("environment {key} ready"));
    Ok(env_python)
}

fn python_version(python: &Path) -> Result<String, EnvError> {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.version)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnvError::Python {
            python: python.to_path_buf(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(EnvError::Python {
            python: python.to_path_buf(),
            message: tail(&out),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The last lines of a command's stderr (stdout when stderr is empty), secrets masked.
fn tail(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        stderr.into_owned()
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(ERROR_TAIL_LINES);
    mask_secrets(&lines[start..].join("\n"))
}

/// How to run uv.
enum Uv {
    Binary(PathBuf),
    Module(PathBuf),
}

impl Uv {
    fn command(&self) -> Command {
        match self {
            Uv::Binary(path) => Command::new(path),
            Uv::Module(python) => {
                let mut cmd = Command::new(python);
                cmd.args(["-m", "uv"]);
                cmd
            }
        }
    }

    fn works(&self) -> bool {
        self.command()
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

fn locate_uv(python: &Path) -> Option<Uv> {
    if let Some(path) = find_on_path("uv") {
        let uv = Uv::Binary(path);
        if uv.works() {
            return Some(uv);
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".local").join("bin").join("uv");
        if is_executable(&path) {
            let uv = Uv::Binary(path);
            if uv.works() {
                return Some(uv);
            }
        }
    }
    let uv = Uv::Module(python.to_path_buf());
    uv.works().then_some(uv)
}

fn find_or_install_uv(python: &Path, progress: &mut dyn FnMut(&str)) -> Result<Uv, EnvError> {
    if let Some(uv) = locate_uv(python) {
        return Ok(uv);
    }
    progress("uv not found; installing it with `python3 -m pip install --user uv`");
    let run = |user: bool| {
        let mut cmd = Command::new(python);
        cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"]);
        if user {
            cmd.arg("--user");
        }
        cmd.arg("uv").stdin(Stdio::null()).output()
    };
    let mut messages = Vec::new();
    for user in [true, false] {
        match run(user) {
            Ok(out) if out.status.success() => {
                if let Some(uv) = locate_uv(python) {
                    progress("uv installed");
                    return Ok(uv);
                }
                messages.push("pip succeeded but uv is still not runnable".to_string());
            }
            Ok(out) => messages.push(tail(&out)),
            Err(e) => messages.push(format!("cannot run {}: {e}", python.display())),
        }
    }
    Err(EnvError::UvMissing {
        message: messages.join("\n"),
    })
}

/// An exclusive `flock(2)` on a file, released on drop.
struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    fn acquire(path: &Path, progress: &mut dyn FnMut(&str)) -> Result<FileLock, EnvError> {
        use std::os::unix::io::AsRawFd;
        let io_err = |source| EnvError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        let fd = file.as_raw_fd();
        // SAFETY: flock on a file descriptor we own for the lifetime of `file`.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            progress("waiting for another build of the same environment");
            loop {
                // SAFETY: as above.
                if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                    break;
                }
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(io_err(err));
                }
            }
        }
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: unlocking our own descriptor; closing it would release the lock anyway.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_comments_and_splits_index() {
        let r = normalize_requirements(
            "# top\n\nsix==1.16.0  # pinned\n  requests>=2 \n-i https://u:p@example/simple\n--extra-index-url=https://x\nurl#egg=foo\n",
        );
        assert_eq!(r.lines, vec!["six==1.16.0", "requests>=2", "url#egg=foo"]);
        assert_eq!(
            r.index,
            vec![
                "-i https://u:p@example/simple",
                "--extra-index-url=https://x"
            ]
        );
    }

    #[test]
    fn key_depends_on_everything() {
        let a = normalize_requirements("six\n");
        let b = normalize_requirements("six\n# comment\n\n");
        let c = normalize_requirements("six\n-i https://mirror/simple\n");
        assert_eq!(env_key("3.11", &a), env_key("3.11", &b));
        assert_ne!(env_key("3.11", &a), env_key("3.12", &a));
        assert_ne!(env_key("3.11", &a), env_key("3.11", &c));
        assert_eq!(env_key("3.11", &a).len(), 32);
    }

    #[test]
    fn secrets_in_urls_are_masked() {
        assert_eq!(
            mask_secrets("GET https://user:tok3n@pkgs.example.com/simple failed"),
            "GET https://****@pkgs.example.com/simple failed"
        );
        assert_eq!(
            mask_secrets("https://pypi.org/simple and //x"),
            "https://pypi.org/simple and //x"
        );
    }
}
