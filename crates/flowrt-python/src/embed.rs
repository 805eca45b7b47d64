//! The Python sources embedded into the binary, unpacked on demand into a content-addressed folder.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// (relative path, contents) of every embedded Python file.
const FILES: &[(&str, &str)] = &[
    (
        "flowrt_worker.py",
        include_str!("../python/flowrt_worker.py"),
    ),
    (
        "shim/promptflow/__init__.py",
        include_str!("../python/shim/promptflow/__init__.py"),
    ),
    (
        "shim/promptflow/tools/__init__.py",
        include_str!("../python/shim/promptflow/tools/__init__.py"),
    ),
    (
        "shim/promptflow/tools/_llm.py",
        include_str!("../python/shim/promptflow/tools/_llm.py"),
    ),
    (
        "shim/promptflow/tools/openai.py",
        include_str!("../python/shim/promptflow/tools/openai.py"),
    ),
    (
        "shim/promptflow/tools/aoai.py",
        include_str!("../python/shim/promptflow/tools/aoai.py"),
    ),
    (
        "shim/promptflow/_sdk/__init__.py",
        include_str!("../python/shim/promptflow/_sdk/__init__.py"),
    ),
    (
        "shim/promptflow/_sdk/entities/__init__.py",
        include_str!("../python/shim/promptflow/_sdk/entities/__init__.py"),
    ),
    (
        "shim/promptflow/core/__init__.py",
        include_str!("../python/shim/promptflow/core/__init__.py"),
    ),
    (
        "shim/promptflow/core/_connection.py",
        include_str!("../python/shim/promptflow/core/_connection.py"),
    ),
    (
        "shim/promptflow/core/_flow.py",
        include_str!("../python/shim/promptflow/core/_flow.py"),
    ),
    (
        "shim/promptflow/core/_host.py",
        include_str!("../python/shim/promptflow/core/_host.py"),
    ),
    (
        "shim/promptflow/core/_model_configuration.py",
        include_str!("../python/shim/promptflow/core/_model_configuration.py"),
    ),
    (
        "shim/promptflow/core/_prompty.py",
        include_str!("../python/shim/promptflow/core/_prompty.py"),
    ),
    (
        "shim/promptflow/core/_prompty_utils.py",
        include_str!("../python/shim/promptflow/core/_prompty_utils.py"),
    ),
    (
        "shim/promptflow/tracing/__init__.py",
        include_str!("../python/shim/promptflow/tracing/__init__.py"),
    ),
    (
        "shim/promptflow/tracing/_operation_context.py",
        include_str!("../python/shim/promptflow/tracing/_operation_context.py"),
    ),
    (
        "shim/promptflow/connections/__init__.py",
        include_str!("../python/shim/promptflow/connections/__init__.py"),
    ),
    (
        "shim/promptflow/contracts/__init__.py",
        include_str!("../python/shim/promptflow/contracts/__init__.py"),
    ),
    (
        "shim/promptflow/contracts/types.py",
        include_str!("../python/shim/promptflow/contracts/types.py"),
    ),
    (
        "shim/promptflow/contracts/multimedia.py",
        include_str!("../python/shim/promptflow/contracts/multimedia.py"),
    ),
    (
        "shim/promptflow/entities/__init__.py",
        include_str!("../python/shim/promptflow/entities/__init__.py"),
    ),
    (
        "shim/promptflow/_core/__init__.py",
        include_str!("../python/shim/promptflow/_core/__init__.py"),
    ),
    (
        "shim/promptflow/_core/tool.py",
        include_str!("../python/shim/promptflow/_core/tool.py"),
    ),
];

/// Short hash of all embedded files (paths and contents).
fn content_hash() -> String {
    let mut hasher = Sha256::new();
    for (path, text) in FILES {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Unpack the embedded files into `<state_dir>/python-<hash>/` (atomically: temp dir + rename) and
/// return the path of `flowrt_worker.py`.
pub(crate) fn unpack(state_dir: &Path) -> std::io::Result<PathBuf> {
    let target = state_dir.join(format!("python-{}", content_hash()));
    let script = target.join("flowrt_worker.py");
    if script.is_file() {
        return Ok(script);
    }
    fs_err::create_dir_all(state_dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = state_dir.join(format!(
        ".python-tmp-{}-{}-{}",
        std::process::id(),
        nanos,
        next_counter()
    ));
    for (rel, text) in FILES {
        let path = tmp.join(rel);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&path, text)?;
    }
    match fs_err::rename(&tmp, &target) {
        Ok(()) => Ok(script),
        Err(err) => {
            // Another process (or thread) won the race: use its copy.
            let _ = fs_err::remove_dir_all(&tmp);
            if script.is_file() {
                Ok(script)
            } else {
                Err(err)
            }
        }
    }
}

fn next_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let a = unpack(dir.path()).unwrap();
        let b = unpack(dir.path()).unwrap();
        assert_eq!(a, b);
        assert!(a.is_file());
        assert!(a
            .parent()
            .unwrap()
            .join("shim/promptflow/core/__init__.py")
            .is_file());
    }

    #[test]
    fn every_python_file_is_embedded() {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if path.extension().is_some_and(|e| e == "py") {
                    let rel = path.strip_prefix(root).unwrap();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
        let mut found = Vec::new();
        walk(&root, &root, &mut found);
        for rel in found {
            assert!(
                FILES.iter().any(|(p, _)| *p == rel),
                "python/{rel} is not in embed.rs FILES"
            );
        }
    }
}
