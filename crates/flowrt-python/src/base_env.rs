//! The base environment's packages: built once per machine, linked into each `FLOWRT_HOME`.
//!
//! A base that pins packages ([`BaseEnv::pins`]) is what a runtime image was: present before any
//! session asks for it, never waited on per session. This module builds the base alone once per
//! machine and Python (`<cache>/flowrt/base-envs/<key>/`, `<cache>` being `XDG_CACHE_HOME` or
//! `~/.cache`), with the binary's own exact pins and no user code, and gives each home a copy made
//! of hard links (`<FLOWRT_HOME>/envs/<key>/`, well under a second), so the home's permission and
//! seal rules for environments apply to it unchanged. An environment with requirements installs
//! the pins first (copied, not linked: the flow's install writes into it) and the flow's
//! requirements over them.
//!
//! When the packages cannot be installed (no index reachable), a flow runs without them and the
//! build says so: a flow that does not import them loses nothing. The failure is remembered for
//! [`RETRY_AFTER`], so an offline machine pays the index's timeouts once, not at every start.

use crate::base::BaseEnv;
use crate::env::{
    create_venv, find_or_install_uv, install_command, python_version, tail, touch_last_used,
    EnvError, FileLock, ResolvedEnv, Uv, LAST_USED, READY_MARKER,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The pinned requirements file written into an environment holding the base's packages.
const PINS_FILE: &str = "flowrt-base-pins.txt";
/// How long a failed install of the base's packages is not tried again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// The key of the base environment `base` alone on the Python whose `sys.version` is `python`.
pub(crate) fn base_key(base: &BaseEnv, python: &str) -> String {
    let mut hasher = Sha256::new();
    for part in ["flowrt-base-env", base.version, python.trim(), base.pins] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Where this machine keeps built base environments, if it has a cache folder.
fn machine_dir() -> Option<PathBuf> {
    let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .and_then(non_empty)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(non_empty)
                .map(|h| h.join(".cache"))
        })?;
    Some(cache.join("flowrt").join("base-envs"))
}

/// Install `base`'s pins into the environment at `env_dir` (which has its venv), as files of its
/// own (`--link-mode copy`): the flow's install, sealed to that folder, may rewrite them, and must
/// not reach uv's cache through a shared file. Bytecode is compiled here because a sealed
/// session cannot write it, and `import openai` takes half again as long without it.
pub(crate) fn install_pins(uv: &Uv, base: &BaseEnv, env_dir: &Path) -> Result<(), EnvError> {
    let pins = env_dir.join(PINS_FILE);
    let mut text = base.pin_lines().collect::<Vec<_>>().join("\n");
    text.push('\n');
    fs_err::write(&pins, text).map_err(|source| EnvError::Io {
        path: pins.clone(),
        source,
    })?;
    // The pins are the closure (exact versions with markers): nothing to resolve, so no other
    // package, and no build script other than an exact pin's, can enter.
    let mut cmd = uv.command();
    install_command(
        &mut cmd,
        &env_dir.join("bin").join("python"),
        &pins,
        &[],
        None,
    );
    let out = cmd
        .args(["--no-deps", "--compile-bytecode", "--link-mode", "copy"])
        .output()
        .map_err(|e| EnvError::BaseInstall {
            base: format!("default@{}", base.version),
            stderr_tail: format!("cannot run uv: {e}"),
        })?;
    if !out.status.success() {
        return Err(EnvError::BaseInstall {
            base: format!("default@{}", base.version),
            stderr_tail: tail(&out, None),
        });
    }
    Ok(())
}

/// What a build says when the base's packages could not be installed.
fn unavailable_warning(base: &BaseEnv, error: &EnvError) -> String {
    let hint = match error {
        // A folder that could not be written (disk full, permissions): not the index's fault.
        EnvError::Io { .. } => "check the free space and permissions of that folder".to_string(),
        _ => format!(
            "check that the package index is reachable (uv's UV_INDEX_URL names a mirror); \
             flowrt tries again {} minutes after a failure",
            RETRY_AFTER.as_secs() / 60
        ),
    };
    format!(
        "warning: {error}\nwarning: the flow runs without the base's packages ({}); {hint}",
        base.packages.join(", ")
    )
}

/// The marker of a failed install of the base `key` under `root`.
fn failure_marker(root: &Path, key: &str) -> PathBuf {
    root.join(format!("{key}.failed"))
}

/// The error of an install of the base that failed less than [`RETRY_AFTER`] ago.
fn failed_recently(root: &Path, key: &str, base: &BaseEnv) -> Option<EnvError> {
    let marker = failure_marker(root, key);
    let age = std::fs::metadata(&marker)
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .ok()?;
    (age < RETRY_AFTER).then(|| EnvError::BaseUnavailable {
        base: format!("default@{}", base.version),
        ago_secs: age.as_secs(),
        reason: std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string(),
    })
}

fn remember_failure(root: &Path, key: &str, error: &EnvError) {
    let _ = fs_err::create_dir_all(root);
    let _ = std::fs::write(failure_marker(root, key), error.to_string());
}

/// Where the base `key` is kept for linking: `base_cache`, else this machine's cache folder.
fn cache_root(base_cache: Option<&Path>) -> Option<PathBuf> {
    base_cache.map(Path::to_path_buf).or_else(machine_dir)
}

/// Lay the base's packages into the new environment `env_dir` under the flow's requirements;
/// when they cannot be installed, say so and go on without them.
pub(crate) fn lay_pins(
    uv: &Uv,
    resolved: &ResolvedEnv,
    env_dir: &Path,
    base_cache: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) {
    let base = resolved.base;
    if base.pins.is_empty() {
        return;
    }
    let python = python_version(&resolved.python).unwrap_or_default();
    let key = base_key(base, &python);
    let root = cache_root(base_cache);
    if let Some(e) = root.as_deref().and_then(|r| failed_recently(r, &key, base)) {
        progress(&unavailable_warning(base, &e));
        return;
    }
    if let Err(e) = install_pins(uv, base, env_dir) {
        if let Some(root) = &root {
            remember_failure(root, &key, &e);
        }
        progress(&unavailable_warning(base, &e));
    }
}

/// Start the environment of a flow with requirements at `env_dir` (which does not exist yet) as
/// a copy of this machine's base environment, built first if need be: its packages are already
/// installed and compiled, which installing the pins again (copied and byte-compiled by uv) took
/// 10-15 s to redo. Files are copied, not linked, so the flow's install over them cannot reach
/// the machine's copy. False when there is no machine copy to take (no cache folder, the base
/// pins nothing, or its packages could not be installed lately): the caller creates the
/// environment and lays the pins itself, and says what is missing.
pub(crate) fn copy_machine_base(
    resolved: &ResolvedEnv,
    env_dir: &Path,
    base_cache: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> bool {
    let base = resolved.base;
    let (Some(root), false) = (cache_root(base_cache), base.pins.is_empty()) else {
        return false;
    };
    let Ok(python) = python_version(&resolved.python) else {
        return false;
    };
    let key = base_key(base, &python);
    let copied = machine_base(resolved, &key, &root, progress)
        .and_then(|machine| recreate_tree(&machine, env_dir, Files::Copied));
    if copied.is_err() {
        let _ = fs_err::remove_dir_all(env_dir);
    }
    copied.is_ok()
}

/// Give the home the base environment alone at `env_dir` (its build lock held by the caller):
/// linked from this machine's copy, built first if need be. Returns the interpreter to run; when
/// the packages cannot be installed, the bare one, after a warning.
pub(crate) fn link_base(
    resolved: &ResolvedEnv,
    key: &str,
    env_dir: &Path,
    base_cache: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, EnvError> {
    let built = match cache_root(base_cache) {
        // Linking takes well under a second: nothing to say about it.
        Some(dir) => machine_base(resolved, key, &dir, progress)
            .and_then(|m| recreate_tree(&m, env_dir, Files::Linked)),
        // No cache folder (no HOME): build it in place.
        None => build_base(resolved, env_dir, progress),
    };
    if let Err(e) = built {
        progress(&unavailable_warning(resolved.base, &e));
        let _ = fs_err::remove_dir_all(env_dir);
        return Ok(resolved.python.clone());
    }
    mark_ready(env_dir, &python_version(&resolved.python)?)?;
    Ok(env_dir.join("bin").join("python"))
}

/// This machine's copy of the base environment `key`, built under its lock when missing.
fn machine_base(
    resolved: &ResolvedEnv,
    key: &str,
    root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, EnvError> {
    let dir = root.join(key);
    if dir.join(READY_MARKER).is_file() {
        return Ok(dir);
    }
    if let Some(e) = failed_recently(root, key, resolved.base) {
        return Err(e);
    }
    fs_err::create_dir_all(root).map_err(|source| EnvError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let _lock = FileLock::acquire(&root.join(format!("{key}.lock")), progress)?;
    if dir.join(READY_MARKER).is_file() {
        return Ok(dir);
    }
    if let Some(e) = failed_recently(root, key, resolved.base) {
        return Err(e);
    }
    if let Err(e) = build_base(resolved, &dir, progress) {
        remember_failure(root, key, &e);
        return Err(e);
    }
    let _ = std::fs::remove_file(failure_marker(root, key));
    mark_ready(&dir, &python_version(&resolved.python)?)?;
    Ok(dir)
}

/// Build the base's packages into a new environment at `dir` (removing an unfinished one).
fn build_base(
    resolved: &ResolvedEnv,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), EnvError> {
    if dir.exists() {
        fs_err::remove_dir_all(dir).map_err(|source| EnvError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let base = resolved.base;
    progress(&format!(
        "building base environment default@{} ({} packages; once for this machine and Python)",
        base.version,
        base.pin_lines().count()
    ));
    let uv = find_or_install_uv(&resolved.python, progress)?;
    // Unseeded: pip is one of the pins, so an unreachable index fails once, fast.
    create_venv(&uv, &resolved.python, dir, false, progress)?;
    let installed = install_pins(&uv, base, dir);
    if installed.is_err() {
        let _ = fs_err::remove_dir_all(dir);
    }
    installed
}

fn mark_ready(dir: &Path, python_version: &str) -> Result<(), EnvError> {
    let marker = dir.join(READY_MARKER);
    fs_err::write(&marker, format!("{python_version}\n")).map_err(|source| EnvError::Io {
        path: marker,
        source,
    })?;
    touch_last_used(dir);
    Ok(())
}

/// How [`recreate_tree`] gives `dst` the files of `src`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Files {
    /// Hard links (copies across file systems): the environment is only read.
    Linked,
    /// Copies of their own, with the source's modification times (the compiled bytecode is
    /// checked against its source's time): a flow's install may rewrite them.
    Copied,
}

/// Recreate the environment `src` at `dst`: folders made, files linked or copied, symbolic links
/// copied; the scripts in `bin/`, which name their environment's path, written anew with `dst`'s.
/// The build markers are left for the caller.
fn recreate_tree(src: &Path, dst: &Path, files: Files) -> Result<(), EnvError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EnvError::Io { path, source }
    };
    let from = src.to_string_lossy().into_owned();
    let to = dst.to_string_lossy().into_owned();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let (dir_src, dir_dst) = (src.join(&rel), dst.join(&rel));
        fs_err::create_dir_all(&dir_dst).map_err(io(&dir_dst))?;
        for entry in fs_err::read_dir(&dir_src).map_err(io(&dir_src))? {
            let entry = entry.map_err(io(&dir_src))?;
            let name = entry.file_name();
            if rel.as_os_str().is_empty() && (name == READY_MARKER || name == LAST_USED) {
                continue;
            }
            let (from_path, to_path) = (entry.path(), dir_dst.join(&name));
            let kind = entry.file_type().map_err(io(&from_path))?;
            if kind.is_dir() {
                pending.push(rel.join(&name));
            } else if kind.is_symlink() {
                let target = fs_err::read_link(&from_path).map_err(io(&from_path))?;
                let target = match target.strip_prefix(src) {
                    Ok(inside) => dst.join(inside),
                    Err(_) => target,
                };
                std::os::unix::fs::symlink(&target, &to_path).map_err(io(&to_path))?;
            } else if rel == Path::new("bin") {
                // Small text files naming their environment (shebangs, `activate`).
                let bytes = fs_err::read(&from_path).map_err(io(&from_path))?;
                let rewritten = match String::from_utf8(bytes) {
                    Ok(text) => text.replace(&from, &to).into_bytes(),
                    Err(e) => e.into_bytes(),
                };
                fs_err::write(&to_path, rewritten).map_err(io(&to_path))?;
                let mode = fs_err::metadata(&from_path)
                    .map_err(io(&from_path))?
                    .permissions();
                fs_err::set_permissions(&to_path, mode).map_err(io(&to_path))?;
            } else if files == Files::Copied || std::fs::hard_link(&from_path, &to_path).is_err() {
                copy_with_time(&from_path, &to_path).map_err(io(&to_path))?;
            }
        }
    }
    Ok(())
}

/// Copy a file and give the copy the original's modification time: Python trusts a module's
/// compiled bytecode only while its source has the time the bytecode records.
fn copy_with_time(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    let modified = std::fs::metadata(from)?.modified()?;
    std::fs::File::options()
        .write(true)
        .open(to)?
        .set_modified(modified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_environment_names_its_own_path_and_shares_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("machine"), tmp.path().join("home/envs/k"));
        let site = src.join("lib/python3.11/site-packages/pkg");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(site.join("__init__.py"), "X = 1\n").unwrap();
        std::fs::write(
            src.join("bin/pip"),
            format!("#!{}/bin/python\nimport pip\n", src.display()),
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3", src.join("bin/python")).unwrap();
        std::os::unix::fs::symlink("python", src.join("bin/python3")).unwrap();
        std::fs::write(src.join(READY_MARKER), "3.11\n").unwrap();

        recreate_tree(&src, &dst, Files::Linked).unwrap();

        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let init = "lib/python3.11/site-packages/pkg/__init__.py";
        assert_eq!(ino(&src.join(init)), ino(&dst.join(init)));
        assert_eq!(
            std::fs::read_to_string(dst.join("bin/pip")).unwrap(),
            format!("#!{}/bin/python\nimport pip\n", dst.display())
        );
        assert_ne!(ino(&src.join("bin/pip")), ino(&dst.join("bin/pip")));
        assert_eq!(
            std::fs::read_link(dst.join("bin/python")).unwrap(),
            Path::new("/usr/bin/python3")
        );
        assert_eq!(
            std::fs::read_link(dst.join("bin/python3")).unwrap(),
            Path::new("python")
        );
        assert!(!dst.join(READY_MARKER).exists());
    }

    #[test]
    fn a_copied_environment_owns_its_files_and_keeps_their_times() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("machine"), tmp.path().join("home/envs/r"));
        let module = "lib/python3.11/site-packages/pkg/__init__.py";
        std::fs::create_dir_all(src.join(module).parent().unwrap()).unwrap();
        std::fs::write(src.join(module), "X = 1\n").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(src.join(module))
            .unwrap()
            .set_modified(old)
            .unwrap();

        recreate_tree(&src, &dst, Files::Copied).unwrap();

        use std::os::unix::fs::MetadataExt;
        let meta = |p: &Path| std::fs::metadata(p).unwrap();
        assert_ne!(meta(&src.join(module)).ino(), meta(&dst.join(module)).ino());
        assert_eq!(meta(&dst.join(module)).modified().unwrap(), old);
        // The flow's install rewriting the copy leaves the machine's file as it was.
        std::fs::write(dst.join(module), "X = 2\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(src.join(module)).unwrap(),
            "X = 1\n"
        );
    }
}
