//! Sealing a session: the kernel (Landlock) limits what an agent and every process under it may
//! touch to its own session folder (read and write), and to the system, its Python and its
//! environment (read and execute). Not the server's home, its database, key file or tokens, not
//! other sessions' folders. Landlock needs no privileges and also binds root; once applied to a
//! process it cannot be lifted, and children inherit it (it also sets `no_new_privs`).
//!
//! Where the kernel has them, a seal also scopes signals and abstract unix sockets to the
//! session (it can signal or connect to no process outside it: not the server, not another
//! session), and may deny TCP connections to named ports (a Ray cluster's control plane).

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use std::path::{Path, PathBuf};

/// The Landlock ABI flowrt asks for. Newer kernels enforce it fully; older ones enforce what they
/// know (the status says so).
const TARGET_ABI: ABI = ABI::V3;

/// System folders a Python process needs to read (and run programs from).
const SYSTEM_READ: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt", "/proc", "/sys",
];

/// Device files a process writes to (`/dev/null`, randomness, shared memory for multiprocessing).
const DEVICES_RW: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/pts",
    "/dev/shm",
];

/// What one session may touch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealPolicy {
    /// Read, write, create, delete: the session folder.
    pub read_write: Vec<PathBuf>,
    /// Read and execute: the interpreter's prefix, the environment, the flowrt binary.
    pub read_exec: Vec<PathBuf>,
    /// TCP ports no process of the session may connect to, on any host (Landlock filters ports,
    /// not addresses). Empty: connections are not filtered.
    pub deny_connect_ports: Vec<u16>,
}

/// How far the kernel enforced a seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealStatus {
    /// Every restriction asked for is enforced.
    Full,
    /// The kernel enforces an older Landlock: files are sealed, some newer rights are not.
    Partial,
    /// The kernel has no Landlock: nothing is enforced.
    None,
}

impl SealStatus {
    pub fn describe(self) -> &'static str {
        match self {
            SealStatus::Full => "sealed (Landlock, fully enforced)",
            SealStatus::Partial => "sealed (Landlock, partly enforced by an older kernel)",
            SealStatus::None => "NOT sealed: this kernel does not enforce Landlock",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot seal the session: {0}")]
pub struct SealError(String);

fn status_of(s: RulesetStatus) -> SealStatus {
    match s {
        RulesetStatus::FullyEnforced => SealStatus::Full,
        RulesetStatus::PartiallyEnforced => SealStatus::Partial,
        RulesetStatus::NotEnforced => SealStatus::None,
    }
}

/// Whether this kernel can seal sessions, without sealing anything (the server asks at start).
pub fn probe() -> SealStatus {
    // Creating a ruleset (never applied) tells whether the kernel has Landlock at all.
    let created = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .and_then(|r| r.create());
    match created {
        Ok(_) if landlock_abi() >= 1 => SealStatus::Full,
        _ => SealStatus::None,
    }
}

/// Whether this kernel's Landlock can deny TCP connections by port (ABI 4, Linux 6.7+).
pub fn filters_connections() -> bool {
    landlock_abi() >= 4
}

/// The kernel's Landlock ABI version (0: none).
fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) reads no memory
    // (the attribute pointer is null and the size 0); it only returns the ABI version or -1.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    version.max(0)
}

/// Seal the calling process (and every process it starts from now on) to `policy`. Paths that do
/// not exist are skipped. Irreversible.
pub fn seal_self(policy: &SealPolicy) -> Result<SealStatus, SealError> {
    let all = AccessFs::from_all(TARGET_ABI);
    let read_exec = AccessFs::from_read(TARGET_ABI);
    let existing = |paths: &mut dyn Iterator<Item = PathBuf>| -> Vec<PathBuf> {
        paths.filter(|p| p.exists()).collect()
    };
    let system: Vec<PathBuf> = existing(&mut SYSTEM_READ.iter().map(PathBuf::from));
    let devices: Vec<PathBuf> = existing(&mut DEVICES_RW.iter().map(PathBuf::from));
    let rx: Vec<PathBuf> = existing(&mut policy.read_exec.iter().cloned());
    let rw: Vec<PathBuf> = existing(&mut policy.read_write.iter().cloned());
    let err = |e: landlock::RulesetError| SealError(e.to_string());
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(err)?
        .scope(Scope::from_all(ABI::V6))
        .map_err(err)?;
    if !policy.deny_connect_ports.is_empty() {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp).map_err(err)?;
    }
    // Landlock's network rules are an allow-list: every port but the denied ones.
    let allowed = (1..=u16::MAX)
        .filter(|p| !policy.deny_connect_ports.contains(p))
        .filter(|_| !policy.deny_connect_ports.is_empty())
        .map(|p| NetPort::new(p, AccessNet::ConnectTcp));
    let status = ruleset
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(&system, read_exec))
        .map_err(err)?
        .add_rules(path_beneath_rules(&rx, read_exec))
        .map_err(err)?
        .add_rules(path_beneath_rules(&devices, all))
        .map_err(err)?
        .add_rules(path_beneath_rules(&rw, all))
        .map_err(err)?
        .add_rules(allowed.map(Ok::<_, landlock::RulesetError>))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    Ok(status_of(status.ruleset))
}

/// What sealing needs to know about a Python interpreter, found by asking it before sealing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonPaths {
    /// The interpreter itself (`sys.executable`): a launcher such as pyenv's shim script resolved
    /// to the program it runs, so the sealed session need not read the launcher's home.
    pub executable: PathBuf,
    /// Its prefix and base prefix (a venv's and the Python it was made from), and its real file.
    pub read: Vec<PathBuf>,
}

/// Ask `python` where it lives. `-I -S`: no user site, no `site` module, so no `.pth` file or
/// `sitecustomize` of an installed package runs before the seal is in place.
pub fn python_paths(python: &Path) -> Result<PythonPaths, SealError> {
    let out = std::process::Command::new(python)
        .args([
            "-I",
            "-S",
            "-c",
            "import os, sys\nprint(sys.executable)\nprint(sys.prefix)\nprint(sys.base_prefix)\nprint(os.path.realpath(sys.executable))",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| SealError(format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(SealError(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(PathBuf::from);
    let executable = lines
        .next()
        .ok_or_else(|| SealError(format!("{} did not say where it is", python.display())))?;
    let mut read: Vec<PathBuf> = lines.collect();
    read.push(executable.clone());
    // A venv's own folder (its pyvenv.cfg and site-packages): with -S (so that no .pth file of
    // the user's packages runs here, in the server) sys.prefix is the base Python's, not the
    // venv's, so look for the venv where `site` does: beside the executable or one folder up.
    if let Some(bin) = executable.parent() {
        for dir in [Some(bin), bin.parent()].into_iter().flatten() {
            if dir.join("pyvenv.cfg").is_file() {
                read.push(dir.to_path_buf());
                break;
            }
        }
    }
    Ok(PythonPaths { executable, read })
}
