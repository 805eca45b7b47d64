//! Content-addressed Python environments built with `uv`.
//!
//! This module owns resolving what an environment is (base version, a published custom
//! environment's requirements merged before the flow's, conflicts reported before any install,
//! `{private}` feed tokens kept out of keys, files and messages), building it once per key under
//! `<FLOWRT_HOME>/envs/<key>/`, listing what it holds and garbage-collecting the least recently
//! used.

use crate::base::{find_base, latest_base, python_satisfies, BaseEnv, BASE_ENVS};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Name of the marker file written last into a finished environment.
pub(crate) const READY_MARKER: &str = ".flowrt-ready";
/// Touched each time a built environment is handed out; `gc` removes the least recently used.
pub(crate) const LAST_USED: &str = ".flowrt-last-used";
/// The merged requirement lines an environment was built from (no index URLs, no tokens).
const MERGED_REQUIREMENTS: &str = "flowrt-requirements.txt";
/// The placeholder in an index URL replaced by the session identity's feed token.
pub const PRIVATE_PLACEHOLDER: &str = "{private}";
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

/// What a session adds to an [`EnvRequest`]; `Default` is the latest base, no custom environment,
/// no feed token (what `flowrt flow test` uses).
#[derive(Clone, Copy, Default)]
pub struct EnvOptions<'a> {
    /// The base environment version (`1.0.0`); `None` is the latest.
    pub base_version: Option<&'a str>,
    /// A published custom environment's requirements, merged before the flow's.
    pub extra_requirements: Option<ExtraRequirements<'a>>,
    /// The session identity's feed token, substituted for `{private}` in index URLs at install
    /// time only.
    pub private_token: Option<&'a str>,
    /// The hosts the identity lets its token go to: a `{private}` index URL on any other host is
    /// refused, so a requirements file cannot send the token to a server of its writer's choice.
    pub private_hosts: &'a [String],
    /// Install sealed (a server sets it: a requirement's build script is its user's code and
    /// must not reach the server's files or secrets).
    pub sandbox: Option<Sandbox<'a>>,
    /// Where built base environments are kept to be linked into homes; `None` is this machine's
    /// cache folder (`XDG_CACHE_HOME` or `~/.cache`, then `flowrt/base-envs`).
    pub base_cache: Option<&'a Path>,
}

/// How a sealed install runs: `exe seal-exec` confines it (Landlock) to the environment being
/// built, `cache` and a temporary folder, with only the environment variables an install needs.
/// `cache` is uv's cache for this install alone, not the machine's: a build script may write
/// anything there, and uv links cached files into the environments it builds, so a cache shared
/// with other users' installs would let one user plant code in another's environment.
#[derive(Clone, Copy, Debug)]
pub struct Sandbox<'a> {
    pub exe: &'a Path,
    pub cache: &'a Path,
    /// TCP ports the install may not connect to (a Ray cluster's control plane).
    pub deny_connect_ports: &'a [u16],
}

impl std::fmt::Debug for EnvOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvOptions")
            .field("base_version", &self.base_version)
            .field("extra_requirements", &self.extra_requirements)
            .field("private_token", &self.private_token.map(|_| "****"))
            .field("private_hosts", &self.private_hosts)
            .field("sandbox", &self.sandbox)
            .field("base_cache", &self.base_cache)
            .finish()
    }
}

/// A custom environment's requirements and the name conflicts report it by.
#[derive(Clone, Copy, Debug)]
pub struct ExtraRequirements<'a> {
    /// `environment myenv@v1`.
    pub label: &'a str,
    /// Its requirements file's text.
    pub text: &'a str,
}

/// An environment resolved but not necessarily built: what [`ensure_env_with`] would build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEnv {
    /// The base environment.
    pub base: &'static BaseEnv,
    /// `None` when there is nothing to install: the default interpreter is used as is. With no
    /// [`ResolvedEnv::lines`], the key of the base environment alone.
    pub key: Option<String>,
    /// The interpreter the environment is built from (the bare one: with requirements, a
    /// session runs [`ResolvedEnv::built_python`]).
    pub python: PathBuf,
    /// The merged requirement lines (custom environment, then flow), normalized; installed over
    /// the base's pins.
    pub lines: Vec<String>,
    /// Index settings (`-i`, `--extra-index-url`) as written, placeholders unsubstituted.
    pub index: Vec<String>,
}

impl ResolvedEnv {
    /// Whether its folder is built (always true when there is nothing to install).
    pub fn is_built(&self, flowrt_home: &Path) -> bool {
        match &self.key {
            None => true,
            Some(key) => env_dir(flowrt_home, key).join(READY_MARKER).is_file(),
        }
    }

    /// The interpreter of the built environment (marked as just used), which is not
    /// [`ResolvedEnv::python`], the interpreter it is built from, when there was anything to
    /// install.
    pub fn built_python(&self, flowrt_home: &Path) -> PathBuf {
        match &self.key {
            None => self.python.clone(),
            Some(key) => {
                let dir = env_dir(flowrt_home, key);
                touch_last_used(&dir);
                dir.join("bin").join("python")
            }
        }
    }
}

/// A package installed in an environment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub source: PackageSource,
}

/// Where an installed package came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageSource {
    /// The interpreter or base environment (including dependencies of requirements).
    Base,
    /// Named by the flow's or the custom environment's requirements.
    Requirements,
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
    #[error("unknown base environment version `{version}`; available: {available}")]
    UnknownBase { version: String, available: String },
    #[error("installing the packages of base environment {base} failed:\n{stderr_tail}")]
    BaseInstall { base: String, stderr_tail: String },
    #[error(
        "the packages of base environment {base} could not be installed {ago_secs} s ago: {reason}"
    )]
    BaseUnavailable {
        base: String,
        ago_secs: u64,
        reason: String,
    },
    #[error("base environment {base} needs Python {needs}, but {} is {found}", python.display())]
    PythonTooOld {
        base: String,
        needs: String,
        python: PathBuf,
        found: String,
    },
    /// Two sources pin one package to different versions.
    #[error("{ours_label}: {ours} conflicts with {theirs_label}: {theirs}")]
    Conflict {
        ours_label: String,
        ours: String,
        theirs_label: String,
        theirs: String,
    },
    #[error(
        "{source_label}: an index URL uses `{{private}}`, which needs a feed token: start the session with `--identity NAME` naming an identity that has one"
    )]
    MissingFeedToken { source_label: String },
    #[error("{source_label}: the index URL host `{host}` is not one the identity's feed token may go to ({}); an admin names the feed's host when creating the identity (`flowrt identity create NAME --feed-host HOST`)", if allowed.is_empty() { "it names none".to_string() } else { format!("it allows {}", allowed.join(", ")) })]
    PrivateHostRefused {
        source_label: String,
        host: String,
        allowed: Vec<String>,
    },
    #[error("cannot list the packages of {}: {message}", python.display())]
    ListPackages { python: PathBuf, message: String },
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

pub(crate) fn env_key(base_version: &str, python_version: &str, req: &Requirements) -> String {
    let mut hasher = Sha256::new();
    for part in [
        "flowrt-env",
        base_version,
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
/// flow has requirements, on the latest base environment. See [`ensure_env_with`].
pub fn ensure_env(
    req: EnvRequest<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, EnvError> {
    ensure_env_with(req, &EnvOptions::default(), progress)
}

/// Work out which environment a request needs without building anything: the base, the merged
/// requirements (a custom environment's before the flow's; the flow's pins win over unpinned
/// entries) and the key. Conflicting pins and a `{private}` index without a token are reported
/// here, before any install.
pub fn resolve_env(req: EnvRequest<'_>, opts: &EnvOptions<'_>) -> Result<ResolvedEnv, EnvError> {
    let base = match opts.base_version {
        None => latest_base(),
        Some(v) => find_base(v).ok_or_else(|| EnvError::UnknownBase {
            version: v.to_string(),
            available: BASE_ENVS
                .iter()
                .map(|b| b.version)
                .collect::<Vec<_>>()
                .join(", "),
        })?,
    };
    // The base's pins are not merged here: they are installed first and the flow's requirements
    // over them, so a package the flow names wins over the base's pin (as `pip install -r` over
    // a runtime image), where merging would call it a conflict.
    let mut sources: Vec<(String, Requirements)> = Vec::new();
    if let Some(extra) = opts.extra_requirements {
        sources.push((extra.label.to_string(), normalize_requirements(extra.text)));
    }
    if let Some(path) = req.requirements.filter(|p| p.is_file()) {
        let text = fs_err::read_to_string(path).map_err(|source| EnvError::ReadRequirements {
            path: path.to_path_buf(),
            source,
        })?;
        let mut flow = normalize_requirements(&text);
        let dir = path.parent().unwrap_or(Path::new("."));
        flow.lines = flow.lines.iter().map(|l| absolutize_line(l, dir)).collect();
        sources.push((requirements_label(path), flow));
    }
    let merged = merge_requirements(&sources)?;
    let python = default_python();
    // `FLOWRT_PYTHON` names an interpreter to run flows without requirements on as it is.
    let interpreter_chosen = std::env::var_os("FLOWRT_PYTHON").is_some_and(|p| !p.is_empty());
    if merged.lines.is_empty() && (base.pins.is_empty() || interpreter_chosen) {
        return Ok(ResolvedEnv {
            base,
            key: None,
            python,
            lines: Vec::new(),
            index: Vec::new(),
        });
    }
    if opts.private_token.is_some() {
        for (label, req) in &sources {
            for line in req.index.iter().filter(|l| l.contains(PRIVATE_PLACEHOLDER)) {
                let host = split_index_line(line)
                    .and_then(|(_, url)| {
                        url::Url::parse(&url.replace(PRIVATE_PLACEHOLDER, "token")).ok()
                    })
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                    .unwrap_or_default();
                if !opts
                    .private_hosts
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&host))
                {
                    return Err(EnvError::PrivateHostRefused {
                        source_label: label.clone(),
                        host,
                        allowed: opts.private_hosts.to_vec(),
                    });
                }
            }
        }
    }
    if opts.private_token.is_none() {
        for (label, req) in &sources {
            if req.index.iter().any(|l| l.contains(PRIVATE_PLACEHOLDER)) {
                return Err(EnvError::MissingFeedToken {
                    source_label: label.clone(),
                });
            }
        }
    }
    let version = python_version(&python)?;
    if !python_satisfies(base.python, &version) {
        return Err(EnvError::PythonTooOld {
            base: format!("default@{}", base.version),
            needs: base.python.to_string(),
            python,
            found: version.split_whitespace().next().unwrap_or("").to_string(),
        });
    }
    let key = if merged.lines.is_empty() {
        crate::base_env::base_key(base, &version)
    } else {
        env_key(base.version, &version, &merged)
    };
    Ok(ResolvedEnv {
        base,
        key: Some(key),
        python,
        lines: merged.lines,
        index: merged.index,
    })
}

/// Return the interpreter for the request, building `<flowrt_home>/envs/<key>/` with `uv` when
/// there is anything to install (see [`resolve_env`]). A built key is reused instantly;
/// concurrent builds of one key wait on a file lock. `progress` receives one-line status messages
/// (never index URLs or tokens).
pub fn ensure_env_with(
    req: EnvRequest<'_>,
    opts: &EnvOptions<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, EnvError> {
    let resolved = resolve_env(req, opts)?;
    let Some(key) = resolved.key.clone() else {
        return Ok(resolved.python);
    };
    let base_python = resolved.python.clone();
    let envs = req.flowrt_home.join("envs");
    let env_dir = envs.join(&key);
    let env_python = env_dir.join("bin").join("python");
    if env_dir.join(READY_MARKER).is_file() {
        touch_last_used(&env_dir);
        return Ok(env_python);
    }
    fs_err::create_dir_all(&envs).map_err(|source| EnvError::Io {
        path: envs.clone(),
        source,
    })?;
    let lock_path = envs.join(format!("{key}.lock"));
    let _lock = FileLock::acquire(&lock_path, progress)?;
    if env_dir.join(READY_MARKER).is_file() {
        touch_last_used(&env_dir);
        return Ok(env_python);
    }
    if env_dir.exists() {
        progress("removing an unfinished environment build");
        fs_err::remove_dir_all(&env_dir).map_err(|source| EnvError::Io {
            path: env_dir.clone(),
            source,
        })?;
    }
    if resolved.lines.is_empty() {
        return crate::base_env::link_base(&resolved, &key, &env_dir, opts.base_cache, progress);
    }
    let version = python_version(&base_python)?;
    let uv = find_or_install_uv(&base_python, progress)?;
    progress(&format!(
        "creating environment {key} (base {}, python {})",
        resolved.base.version,
        version.split_whitespace().next().unwrap_or(&version)
    ));
    // An empty environment first, for uv to resolve the flow's requirements against (a dry
    // run): a misspelt or missing package fails the build in about a second, not after the
    // base's packages are laid (copying them takes seconds on a slow disk).
    create_venv(&uv, &base_python, &env_dir, false, progress)?;
    let merged_file = env_dir.join(MERGED_REQUIREMENTS);
    let mut merged = resolved.lines.join("\n");
    merged.push('\n');
    let write_merged = || {
        fs_err::write(&merged_file, &merged).map_err(|source| EnvError::Io {
            path: merged_file.clone(),
            source,
        })
    };
    write_merged()?;
    let label = req
        .requirements
        .map(Path::to_path_buf)
        .unwrap_or_else(|| merged_file.clone());
    let install = FlowInstall {
        uv: &uv,
        base_python: &base_python,
        env_dir: &env_dir,
        requirements: &merged_file,
        label: &label,
        index: &resolved.index,
        opts,
        build_tmp: envs.join(format!("{key}.tmp")),
    };
    install.run(true)?;
    fs_err::remove_dir_all(&env_dir).map_err(|source| EnvError::Io {
        path: env_dir.clone(),
        source,
    })?;
    // Then the base's packages: this machine's built copy, else installed here. The flow's own
    // requirements install even when the base's cannot: a flow that needs only them runs.
    if !crate::base_env::copy_machine_base(&resolved, &env_dir, opts.base_cache, progress) {
        create_venv(&uv, &base_python, &env_dir, true, progress)?;
        crate::base_env::lay_pins(&uv, &resolved, &env_dir, opts.base_cache, progress);
    }
    write_merged()?;
    progress(&format!(
        "installing {} requirement(s) from {}",
        resolved.lines.len(),
        label.display()
    ));
    install.run(false)?;
    let marker = env_dir.join(READY_MARKER);
    fs_err::write(&marker, format!("{version}\n")).map_err(|source| EnvError::Io {
        path: marker,
        source,
    })?;
    touch_last_used(&env_dir);
    progress(&format!("environment {key} ready"));
    Ok(env_python)
}

/// The install of a flow's requirements into its new environment, run by uv (sealed when the
/// options give a sandbox: a package's build script is user code).
struct FlowInstall<'a> {
    uv: &'a Uv,
    base_python: &'a Path,
    env_dir: &'a Path,
    requirements: &'a Path,
    /// The requirements file as the user knows it, for messages.
    label: &'a Path,
    index: &'a [String],
    opts: &'a EnvOptions<'a>,
    build_tmp: PathBuf,
}

impl FlowInstall<'_> {
    /// Install the requirements, or with `dry_run` only resolve them (uv's `--dry-run`: what
    /// would be installed, nothing written into the environment).
    fn run(&self, dry_run: bool) -> Result<(), EnvError> {
        let mut cmd = self.uv.command();
        install_command(
            &mut cmd,
            &self.env_dir.join("bin").join("python"),
            self.requirements,
            self.index,
            self.opts.private_token,
        );
        if dry_run {
            cmd.arg("--dry-run");
        }
        if let Some(sandbox) = self.opts.sandbox {
            let _ = fs_err::remove_dir_all(&self.build_tmp);
            fs_err::create_dir_all(&self.build_tmp).map_err(|source| EnvError::Io {
                path: self.build_tmp.clone(),
                source,
            })?;
            cmd = sealed_install(
                sandbox,
                &cmd,
                self.base_python,
                self.env_dir,
                &self.build_tmp,
            );
        }
        let out = cmd.output();
        let _ = fs_err::remove_dir_all(&self.build_tmp);
        let out = out.map_err(|e| EnvError::Install {
            requirements: self.label.to_path_buf(),
            stderr_tail: format!("cannot run uv: {e}"),
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(EnvError::Install {
            requirements: self.label.to_path_buf(),
            stderr_tail: tail(&out, self.opts.private_token),
        })
    }
}

/// `uv venv` at `env_dir` from `base_python`, with pip in it when `seed` (without, the caller
/// installs pip itself).
pub(crate) fn create_venv(
    uv: &Uv,
    base_python: &Path,
    env_dir: &Path,
    seed: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(), EnvError> {
    let env_python = env_dir.join("bin").join("python");
    // `--seed` puts pip in the environment, as in promptflow's (virtualenv or conda)
    // environments: some tools shell out to `pip` or `python -m pip`.
    let venv = |seed: bool| {
        let mut cmd = uv.command();
        cmd.arg("venv");
        if seed {
            cmd.arg("--seed");
        }
        cmd.arg("--python")
            .arg(base_python)
            .arg(env_dir)
            .env("UV_PYTHON_DOWNLOADS", "never")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| EnvError::Venv {
                path: env_dir.to_path_buf(),
                stderr_tail: format!("cannot run uv: {e}"),
            })
    };
    let mut out = venv(seed)?;
    if seed && !out.status.success() {
        // Seeding needs pip from the index or uv's cache; without them, pip comes from the
        // Python's own bundled copy (ensurepip) when it has one.
        progress("could not seed pip into the environment; creating it without pip");
        if env_dir.exists() {
            let _ = fs_err::remove_dir_all(env_dir);
        }
        out = venv(false)?;
        if out.status.success() {
            let ensurepip = Command::new(&env_python)
                .args(["-m", "ensurepip", "--default-pip"])
                .stdin(Stdio::null())
                .output();
            if !ensurepip.is_ok_and(|o| o.status.success()) {
                progress("warning: the environment has no pip (ensurepip is not available)");
            }
        }
    }
    if !out.status.success() {
        return Err(EnvError::Venv {
            path: env_dir.to_path_buf(),
            stderr_tail: tail(&out, None),
        });
    }
    Ok(())
}

/// Environment variables an install may see: where programs and certificates are, the proxy, and
/// the operator's own uv and pip settings (indexes, find-links). Nothing else of the server's.
fn install_env_passes(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "XDG_CACHE_HOME",
    ];
    NAMES.contains(&name) || name.starts_with("UV_") || name.starts_with("PIP_")
}

/// `inner` (a uv install) run through `seal-exec`: read-write only the environment, the
/// sandbox's cache and `tmp`; read the system, the base Python and uv; the environment scrubbed to what
/// [`install_env_passes`] lets through plus what `inner` sets.
fn sealed_install(
    sandbox: Sandbox<'_>,
    inner: &Command,
    base_python: &Path,
    env_dir: &Path,
    tmp: &Path,
) -> Command {
    let mut cmd = Command::new(sandbox.exe);
    cmd.arg("seal-exec")
        .arg("--python")
        .arg(base_python)
        .arg("--rw")
        .arg(env_dir)
        .arg("--rw")
        .arg(tmp);
    let _ = fs_err::create_dir_all(sandbox.cache);
    cmd.arg("--rw").arg(sandbox.cache);
    if !sandbox.deny_connect_ports.is_empty() {
        let ports: Vec<String> = sandbox
            .deny_connect_ports
            .iter()
            .map(u16::to_string)
            .collect();
        cmd.arg("--deny-connect-ports").arg(ports.join(","));
    }
    let program = Path::new(inner.get_program());
    if program.is_absolute() {
        cmd.arg("--rx").arg(program);
    }
    // uv run as a module of some Python: that Python's prefix too.
    if program
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("python"))
    {
        cmd.arg("--python").arg(program);
    }
    cmd.arg("--")
        .arg(inner.get_program())
        .args(inner.get_args());
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(install_env_passes) {
            cmd.env(k, v);
        }
    }
    cmd.env("TMPDIR", tmp).env("UV_CACHE_DIR", sandbox.cache);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Fill `cmd` (a `uv` command) with `pip install --python PY -r FILE`, the index settings passed
/// through `UV_INDEX_URL` / `UV_EXTRA_INDEX_URL` (not on the command line, where other users could
/// read a token) with `{private}` replaced by `token`.
pub(crate) fn install_command(
    cmd: &mut Command,
    python: &Path,
    requirements: &Path,
    index: &[String],
    token: Option<&str>,
) {
    cmd.args(["pip", "install", "--python"])
        .arg(python)
        .arg("-r")
        .arg(requirements)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .stdin(Stdio::null());
    let mut default_index = None;
    let mut extra = Vec::new();
    for line in index {
        let Some((is_default, url)) = split_index_line(line) else {
            continue;
        };
        let url = match token {
            Some(t) => url.replace(PRIVATE_PLACEHOLDER, &percent_encode(t)),
            None => url.to_string(),
        };
        if is_default {
            default_index = Some(url);
        } else {
            extra.push(url);
        }
    }
    if let Some(url) = default_index {
        cmd.env("UV_INDEX_URL", url);
    }
    if !extra.is_empty() {
        cmd.env("UV_EXTRA_INDEX_URL", extra.join(" "));
    }
}

/// `-i URL` / `--index-url=URL` → `(true, URL)`; `--extra-index-url URL` → `(false, URL)`.
fn split_index_line(line: &str) -> Option<(bool, &str)> {
    for (flag, is_default) in [
        ("--extra-index-url", false),
        ("--index-url", true),
        ("-i", true),
    ] {
        if let Some(rest) = line.strip_prefix(flag) {
            if rest.starts_with([' ', '\t', '=']) {
                let url = rest.trim_start_matches([' ', '\t', '=']).trim();
                return (!url.is_empty()).then_some((is_default, url));
            }
        }
    }
    None
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How conflicts name the flow's requirements file: its file name (`requirements.txt`).
fn requirements_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Make relative file references in a requirement line (`-r`, `-c`, `-e`, `./pkg`) absolute, as
/// the merged file lives elsewhere.
fn absolutize_line(line: &str, dir: &Path) -> String {
    let join = |p: &str| dir.join(p).display().to_string();
    for (flag, only_dotted) in [
        ("-r", false),
        ("--requirement", false),
        ("-c", false),
        ("--constraint", false),
        ("-e", true),
        ("--editable", true),
    ] {
        if let Some(rest) = line.strip_prefix(flag) {
            if rest.starts_with([' ', '\t', '=']) {
                let target = rest.trim_start_matches([' ', '\t', '=']).trim();
                let relative = !target.contains("://")
                    && !Path::new(target).is_absolute()
                    && (!only_dotted || target.starts_with('.'));
                return if relative {
                    format!("{flag} {}", join(target))
                } else {
                    line.to_string()
                };
            }
        }
    }
    if line.starts_with("./") || line.starts_with("../") {
        return join(line);
    }
    line.to_string()
}

/// A requirement's normalized project name and the exact version it pins, if any.
type ParsedRequirement = (String, Option<String>);

/// A requirement line's normalized project name and whether it pins one exact version.
fn parse_requirement(line: &str) -> Option<ParsedRequirement> {
    if line.starts_with('-')
        || line.contains("://")
        || line.starts_with('.')
        || line.starts_with('/')
    {
        return None;
    }
    let spec = line.split(';').next().unwrap_or("").trim();
    let end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(spec.len());
    let name = &spec[..end];
    if name.is_empty() {
        return None;
    }
    let mut rest = spec[end..].trim_start();
    if rest.starts_with('[') {
        rest = rest
            .find(']')
            .map(|i| rest[i + 1..].trim_start())
            .unwrap_or("");
    }
    if rest.starts_with('@') {
        return None;
    }
    let pin = rest
        .strip_prefix("===")
        .or_else(|| rest.strip_prefix("=="))
        .filter(|v| !v.contains(',') && !v.contains('*'))
        .map(|v| v.trim().to_string());
    Some((normalize_name(name), pin))
}

/// PEP 503: lowercase, runs of `-`, `_`, `.` become `-`.
pub(crate) fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Merge requirement sources, earliest first. A later source's entry for a package replaces an
/// earlier *unpinned* entry; two different exact pins are a conflict naming both sides.
pub(crate) fn merge_requirements(
    sources: &[(String, Requirements)],
) -> Result<Requirements, EnvError> {
    // (label, line, parsed) of surviving entries
    let mut kept: Vec<(usize, String, Option<ParsedRequirement>)> = Vec::new();
    let mut index = Vec::new();
    for (i, (label, req)) in sources.iter().enumerate() {
        for line in &req.lines {
            let parsed = parse_requirement(line);
            if let Some((name, pin)) = &parsed {
                let mut duplicate = false;
                for (j, earlier, earlier_parsed) in &kept {
                    if let Some((earlier_name, Some(earlier_pin))) = earlier_parsed {
                        if earlier_name == name {
                            match pin {
                                Some(p) if p != earlier_pin => {
                                    return Err(EnvError::Conflict {
                                        ours_label: label.clone(),
                                        ours: line.clone(),
                                        theirs_label: sources[*j].0.clone(),
                                        theirs: earlier.clone(),
                                    })
                                }
                                Some(_) => duplicate = true,
                                None => {}
                            }
                        }
                    }
                }
                if duplicate {
                    continue;
                }
                // the later entry wins over earlier unpinned entries of the same package
                kept.retain(|(j, _, p)| *j == i || !matches!(p, Some((n, None)) if n == name));
            }
            kept.push((i, line.clone(), parsed));
        }
        for line in &req.index {
            if !index.contains(line) {
                index.push(line.clone());
            }
        }
    }
    Ok(Requirements {
        lines: kept.into_iter().map(|(_, line, _)| line).collect(),
        index,
    })
}

fn env_dir(flowrt_home: &Path, key: &str) -> PathBuf {
    flowrt_home.join("envs").join(key)
}

pub(crate) fn touch_last_used(env_dir: &Path) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Best effort: a read-only home only loses LRU precision.
    let _ = std::fs::write(env_dir.join(LAST_USED), format!("{now}\n"));
}

/// When an environment folder was last handed out (nanoseconds; 0 when unknown).
fn last_used(env_dir: &Path) -> u128 {
    if let Some(n) = std::fs::read_to_string(env_dir.join(LAST_USED))
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return n;
    }
    std::fs::metadata(env_dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Remove all but the `keep` most recently used environments under `<flowrt_home>/envs/`
/// (unfinished builds count as oldest). An environment whose build lock is held is skipped.
/// Returns the removed keys, oldest first.
pub fn gc(flowrt_home: &Path, keep: usize) -> Result<Vec<String>, EnvError> {
    let envs = flowrt_home.join("envs");
    let entries = match std::fs::read_dir(&envs) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(EnvError::Io { path: envs, source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| EnvError::Io {
            path: envs.clone(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()) && path.is_dir() {
            let ready = path.join(READY_MARKER).is_file();
            found.push((ready, last_used(&path), name));
        }
    }
    // newest first; unfinished builds last
    found.sort_by_key(|f| std::cmp::Reverse((f.0, f.1)));
    let mut removed = Vec::new();
    for (_, _, key) in found.into_iter().skip(keep).rev() {
        let Some(_lock) = FileLock::try_acquire(&envs.join(format!("{key}.lock")))? else {
            continue;
        };
        let dir = envs.join(&key);
        fs_err::remove_dir_all(&dir).map_err(|source| EnvError::Io { path: dir, source })?;
        removed.push(key);
    }
    Ok(removed)
}

/// The packages installed in the environment of `python`, as `uv pip list` reports them; each
/// marked as the flow's requirement or the base's.
pub fn installed_packages(python: &Path) -> Result<Vec<Package>, EnvError> {
    let uv = find_or_install_uv(&default_python(), &mut |_| {})?;
    let out = uv
        .command()
        .args(["pip", "list", "--format", "json", "--python"])
        .arg(python)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnvError::ListPackages {
            python: python.to_path_buf(),
            message: format!("cannot run uv: {e}"),
        })?;
    packages_from_listing(python, &out, "uv")
}

/// The same list, asked of the environment's own interpreter (`importlib.metadata`): for a
/// sealed session, which may run its Python and nothing else.
pub fn installed_packages_by_python(python: &Path) -> Result<Vec<Package>, EnvError> {
    const LIST: &str = r#"import importlib.metadata as m, json, sys
seen = {}
for d in m.distributions():
    name = d.metadata["Name"]
    if name and name.lower() not in seen:
        seen[name.lower()] = {"name": name, "version": d.version}
json.dump(sorted(seen.values(), key=lambda p: p["name"].lower()), sys.stdout)
"#;
    let out = Command::new(python)
        .args(["-I", "-c", LIST])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnvError::ListPackages {
            python: python.to_path_buf(),
            message: format!("cannot run it: {e}"),
        })?;
    packages_from_listing(python, &out, "python")
}

/// `[{name, version}]` printed by `lister`, each marked as requested or the base's.
fn packages_from_listing(
    python: &Path,
    out: &std::process::Output,
    lister: &str,
) -> Result<Vec<Package>, EnvError> {
    if !out.status.success() {
        return Err(EnvError::ListPackages {
            python: python.to_path_buf(),
            message: tail(out, None),
        });
    }
    let requested: HashSet<String> = python
        .parent()
        .and_then(Path::parent)
        .and_then(|dir| std::fs::read_to_string(dir.join(MERGED_REQUIREMENTS)).ok())
        .map(|text| {
            text.lines()
                .filter_map(parse_requirement)
                .map(|(name, _)| name)
                .collect()
        })
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Listed {
        name: String,
        version: String,
    }
    let listed: Vec<Listed> =
        serde_json::from_slice(&out.stdout).map_err(|e| EnvError::ListPackages {
            python: python.to_path_buf(),
            message: format!("{lister} printed unexpected JSON: {e}"),
        })?;
    Ok(listed
        .into_iter()
        .map(|p| {
            let source = if requested.contains(&normalize_name(&p.name)) {
                PackageSource::Requirements
            } else {
                PackageSource::Base
            };
            Package {
                name: p.name,
                version: p.version,
                source,
            }
        })
        .collect())
}

/// `sys.version` of `python`, asked once per process and path: keys are computed at every session
/// start, and an interpreter behind a version manager's shim (pyenv) takes a sixth of a second to
/// answer.
pub(crate) fn python_version(python: &Path) -> Result<String, EnvError> {
    static KNOWN: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let known =
        |k: &Vec<(PathBuf, String)>| k.iter().find(|(p, _)| p == python).map(|(_, v)| v.clone());
    if let Some(v) = KNOWN.lock().ok().and_then(|k| known(&k)) {
        return Ok(v);
    }
    let version = ask_python_version(python)?;
    if let Ok(mut k) = KNOWN.lock() {
        if known(&k).is_none() {
            k.push((python.to_path_buf(), version.clone()));
        }
    }
    Ok(version)
}

fn ask_python_version(python: &Path) -> Result<String, EnvError> {
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
            message: tail(&out, None),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The last lines of a command's stderr (stdout when stderr is empty), secrets masked: URL
/// credentials, and `token` wherever it appears (plain or percent-encoded).
pub(crate) fn tail(out: &Output, token: Option<&str>) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        stderr.into_owned()
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(ERROR_TAIL_LINES);
    let mut text = mask_secrets(&lines[start..].join("\n"));
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        text = text.replace(token, "****");
        text = text.replace(&percent_encode(token), "****");
    }
    text
}

/// How to run uv.
pub(crate) enum Uv {
    Binary(PathBuf),
    Module(PathBuf),
}

impl Uv {
    pub(crate) fn command(&self) -> Command {
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

pub(crate) fn find_or_install_uv(
    python: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Uv, EnvError> {
    if let Some(uv) = locate_uv(python) {
        return Ok(uv);
    }
    progress("uv not found; installing it with `python3 -m pip install --user uv`");
    let run = |installer: &Path, user: bool| {
        let mut cmd = Command::new(installer);
        cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"]);
        if user {
            cmd.arg("--user");
        }
        cmd.arg("uv").stdin(Stdio::null()).output()
    };
    // The flow's interpreter first; a venv made without pip (`uv venv`) falls back to the
    // python3 on PATH, whose `--user` uv is found the same way.
    let mut installers = vec![python.to_path_buf()];
    if let Some(system) = find_on_path("python3").filter(|p| p != python) {
        installers.push(system);
    }
    let mut messages = Vec::new();
    for installer in &installers {
        for user in [true, false] {
            match run(installer, user) {
                Ok(out) if out.status.success() => {
                    let found = locate_uv(python).or_else(|| {
                        let module = Uv::Module(installer.clone());
                        module.works().then_some(module)
                    });
                    if let Some(uv) = found {
                        progress("uv installed");
                        return Ok(uv);
                    }
                    messages.push("pip succeeded but uv is still not runnable".to_string());
                }
                Ok(out) => messages.push(tail(&out, None)),
                Err(e) => messages.push(format!("cannot run {}: {e}", installer.display())),
            }
        }
    }
    Err(EnvError::UvMissing {
        message: messages.join("\n"),
    })
}

/// An exclusive lock on a file: the open file holds it, and closing it (drop) releases it.
pub(crate) struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn open(path: &Path) -> Result<std::fs::File, EnvError> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| EnvError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Wait for the lock, saying so when someone else holds it.
    pub(crate) fn acquire(
        path: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<FileLock, EnvError> {
        let file = Self::open(path)?;
        let io_err = |source| EnvError::Io {
            path: path.to_path_buf(),
            source,
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                progress("waiting for another build of the same environment");
                file.lock().map_err(io_err)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        Ok(FileLock { _file: file })
    }

    /// The lock if nobody holds it; `None` when it is held.
    fn try_acquire(path: &Path) -> Result<Option<FileLock>, EnvError> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(EnvError::Io {
                path: path.to_path_buf(),
                source,
            }),
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
        assert_eq!(env_key("1.1.0", "3.11", &a), env_key("1.1.0", "3.11", &b));
        assert_ne!(env_key("1.1.0", "3.11", &a), env_key("1.1.0", "3.12", &a));
        assert_ne!(env_key("1.1.0", "3.11", &a), env_key("1.1.0", "3.11", &c));
        assert_ne!(env_key("1.1.0", "3.11", &a), env_key("1.0.0", "3.11", &a));
        assert_eq!(env_key("1.1.0", "3.11", &a).len(), 32);
    }

    fn sources(parts: &[(&str, &str)]) -> Vec<(String, Requirements)> {
        parts
            .iter()
            .map(|(label, text)| (label.to_string(), normalize_requirements(text)))
            .collect()
    }

    #[test]
    fn user_pins_win_over_unpinned_entries() {
        let merged = merge_requirements(&sources(&[
            (
                "environment myenv@v1",
                "numpy
six==1.16.0
Requests[socks]>=2
",
            ),
            (
                "requirements.txt",
                "numpy==2.0.0
requests==2.32.3
six==1.16.0
pyyaml
",
            ),
        ]))
        .unwrap();
        assert_eq!(
            merged.lines,
            ["six==1.16.0", "numpy==2.0.0", "requests==2.32.3", "pyyaml"]
        );
    }

    #[test]
    fn different_pins_conflict_naming_both_sides() {
        let err = merge_requirements(&sources(&[
            (
                "environment myenv@v1",
                "numpy==1.26.4
",
            ),
            (
                "requirements.txt",
                "NumPy==2.0.0 ; python_version > '3'
",
            ),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "requirements.txt: NumPy==2.0.0 ; python_version > '3' conflicts with environment myenv@v1: numpy==1.26.4"
        );
    }

    #[test]
    fn requirement_names_are_parsed() {
        assert_eq!(
            parse_requirement("Foo_Bar.baz[x]==1.0"),
            Some(("foo-bar-baz".into(), Some("1.0".into())))
        );
        assert_eq!(parse_requirement("foo>=1,<2"), Some(("foo".into(), None)));
        assert_eq!(parse_requirement("foo==1.*"), Some(("foo".into(), None)));
        assert_eq!(parse_requirement("foo @ https://x/foo.whl"), None);
        assert_eq!(parse_requirement("-r other.txt"), None);
        assert_eq!(parse_requirement("./local"), None);
    }

    #[test]
    fn relative_file_references_become_absolute() {
        let dir = Path::new("/flows/a");
        assert_eq!(
            absolutize_line("-r other.txt", dir),
            "-r /flows/a/other.txt"
        );
        assert_eq!(absolutize_line("-c=/abs/c.txt", dir), "-c=/abs/c.txt");
        assert_eq!(absolutize_line("-e ./pkg", dir), "-e /flows/a/./pkg");
        assert_eq!(
            absolutize_line("-e git+https://x/y", dir),
            "-e git+https://x/y"
        );
        assert_eq!(absolutize_line("./pkg", dir), "/flows/a/./pkg");
        assert_eq!(absolutize_line("six", dir), "six");
    }

    #[test]
    fn private_token_goes_to_uv_environment_only() {
        let index = vec![
            "-i https://{private}@feed.example/simple".to_string(),
            "--extra-index-url=https://x:{private}@other.example/simple".to_string(),
            "--extra-index-url https://pypi.org/simple".to_string(),
        ];
        let mut cmd = Command::new("uv");
        install_command(
            &mut cmd,
            Path::new("/env/bin/python"),
            Path::new("/env/req.txt"),
            &index,
            Some("t0k/en"),
        );
        let envs: std::collections::HashMap<_, _> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert_eq!(
            envs["UV_INDEX_URL"].as_deref(),
            Some("https://t0k%2Fen@feed.example/simple")
        );
        assert_eq!(
            envs["UV_EXTRA_INDEX_URL"].as_deref(),
            Some("https://x:t0k%2Fen@other.example/simple https://pypi.org/simple")
        );
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "pip",
                "install",
                "--python",
                "/env/bin/python",
                "-r",
                "/env/req.txt"
            ]
        );
        // the key uses the unsubstituted line
        let a = normalize_requirements("six\n-i https://{private}@feed.example/simple\n");
        assert_eq!(a.index, ["-i https://{private}@feed.example/simple"]);
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
