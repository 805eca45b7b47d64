//! Flow snapshots: a flow folder's files, packed by the client (as promptflow uploads snapshots:
//! `.gitignore` / `.amlignore` honoured), checked and unpacked by the server, and named by the
//! hash of their content. The server never reads a client's path: it runs what was uploaded.
//!
//! An upload is untrusted: every entry must be a regular file or folder with a relative path that
//! stays inside the snapshot, and counts and sizes are bounded while reading, not from headers.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Bounds on one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotLimits {
    pub max_files: usize,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        SnapshotLimits {
            max_files: 10_000,
            max_file_bytes: 64 * 1024 * 1024,
            max_total_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// `sha256:` and the hex digest of the files (see [`hash_files`]).
    pub hash: String,
    pub files: usize,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("'{path}' is an absolute path; a snapshot holds paths relative to the flow folder")]
    Absolute { path: String },
    #[error("'{path}' leaves the flow folder ('..'); a snapshot holds only the flow's own files")]
    Escapes { path: String },
    #[error("'{path}' is a {kind}; a snapshot holds only regular files and folders")]
    NotRegular { path: String, kind: &'static str },
    #[error("'{path}' is a link to {target}, outside the flow folder; copy the file in, or list it in additional_includes")]
    LinkOut { path: String, target: String },
    #[error("more than {limit} files; leave generated files out with .amlignore or .gitignore")]
    TooManyFiles { limit: usize },
    #[error("'{path}' is larger than {limit} bytes; keep large data out of the flow folder")]
    FileTooLarge { path: String, limit: u64 },
    #[error(
        "the files add up to more than {limit} bytes; leave data and outputs out with .amlignore"
    )]
    TooLarge { limit: u64 },
    #[error("the upload is not a valid gzip-compressed tar archive: {message}")]
    Malformed { message: String },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SnapshotError {
    /// Whether the upload itself is at fault (a 4xx), rather than the machine (a 5xx).
    pub fn is_bad_upload(&self) -> bool {
        !matches!(self, SnapshotError::Io { .. })
    }
}

fn io<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'p {
    move |source| SnapshotError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Folders never part of a snapshot: caches, version control, promptflow's own outputs.
const SKIPPED: &[&str] = &[
    ".git",
    "__pycache__",
    ".promptflow",
    ".runs",
    "node_modules",
];

/// The files of a flow folder as `(relative path with '/', absolute path)`, sorted by path:
/// `.gitignore` and `.amlignore` rules honoured, skipped folders left out, links followed only
/// when they stay inside the folder.
pub fn collect(
    dir: &Path,
    limits: &SnapshotLimits,
) -> Result<Vec<(String, PathBuf)>, SnapshotError> {
    let root = dir.canonicalize().map_err(io("cannot read", dir))?;
    let walker = ignore::WalkBuilder::new(&root)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .parents(false)
        .add_custom_ignore_filename(".amlignore")
        .follow_links(false)
        .filter_entry(|e| !SKIPPED.iter().any(|s| e.file_name() == *s))
        .build();
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in walker {
        let entry = entry.map_err(|e| SnapshotError::Io {
            action: "cannot walk",
            path: root.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let path = entry.path();
        let rel = path.strip_prefix(&root).unwrap_or(path);
        if rel.as_os_str().is_empty() {
            continue;
        }
        let rel_text = rel.to_string_lossy().replace('\\', "/");
        let meta = std::fs::symlink_metadata(path).map_err(io("cannot read", path))?;
        let real = if meta.file_type().is_symlink() {
            let target = path
                .canonicalize()
                .map_err(io("cannot follow the link", path))?;
            if !target.starts_with(&root) {
                return Err(SnapshotError::LinkOut {
                    path: rel_text,
                    target: target.display().to_string(),
                });
            }
            target
        } else {
            path.to_path_buf()
        };
        let meta = std::fs::metadata(&real).map_err(io("cannot read", &real))?;
        if meta.is_dir() {
            continue;
        }
        if !meta.is_file() {
            return Err(SnapshotError::NotRegular {
                path: rel_text,
                kind: "special file",
            });
        }
        if meta.len() > limits.max_file_bytes {
            return Err(SnapshotError::FileTooLarge {
                path: rel_text,
                limit: limits.max_file_bytes,
            });
        }
        total += meta.len();
        if total > limits.max_total_bytes {
            return Err(SnapshotError::TooLarge {
                limit: limits.max_total_bytes,
            });
        }
        files.push((rel_text, real));
        if files.len() > limits.max_files {
            return Err(SnapshotError::TooManyFiles {
                limit: limits.max_files,
            });
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// The snapshot's name: sha256 over every file in path order (path, NUL, length, content), so
/// the same files give the same hash on any machine, whatever their times or modes.
pub fn hash_files(files: &[(String, PathBuf)]) -> Result<String, SnapshotError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (rel, path) in files {
        // Read a piece at a time: a large file is hashed without being held in memory.
        let mut f = std::fs::File::open(path).map_err(io("cannot read", path))?;
        let len = f.metadata().map_err(io("cannot read", path))?.len();
        h.update(rel.as_bytes());
        h.update([0u8]);
        h.update(len.to_le_bytes());
        let mut read = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io("cannot read", path))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            h.update(&buf[..n]);
        }
        if read != len {
            return Err(SnapshotError::Malformed {
                message: format!("'{rel}' changed while it was read"),
            });
        }
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Store a folder laid out in the snapshots folder (a flow saved in place, not uploaded) under
/// its hash: `<parent>/<hex>`, what it holds returned. When that snapshot exists already the
/// folder is removed: the same files are kept once.
pub fn settle(dir: &Path, limits: &SnapshotLimits) -> Result<SnapshotInfo, SnapshotError> {
    let files = collect(dir, limits)?;
    let mut bytes = 0u64;
    for (_, path) in &files {
        bytes += std::fs::metadata(path)
            .map_err(io("cannot read", path))?
            .len();
    }
    let info = SnapshotInfo {
        hash: hash_files(&files)?,
        files: files.len(),
        bytes,
    };
    let dest = dir.with_file_name(info.hash.trim_start_matches("sha256:"));
    if dest.exists() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        std::fs::rename(dir, &dest).map_err(io("cannot store", dir))?;
    }
    Ok(info)
}

/// Pack a flow folder: the gzip-compressed tar to upload, and what it holds.
pub fn pack(dir: &Path, limits: &SnapshotLimits) -> Result<(Vec<u8>, SnapshotInfo), SnapshotError> {
    let files = collect(dir, limits)?;
    let hash = hash_files(&files)?;
    let mut bytes = 0u64;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (rel, path) in &files {
        let data = std::fs::read(path).map_err(io("cannot read", path))?;
        bytes += data.len() as u64;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append_data(&mut header, rel, data.as_slice())
            .map_err(io("cannot pack", path))?;
    }
    let gz = tar.into_inner().map_err(io("cannot pack", dir))?;
    let out = gz.finish().map_err(io("cannot pack", dir))?;
    Ok((
        out,
        SnapshotInfo {
            hash,
            files: files.len(),
            bytes,
        },
    ))
}

/// A path from an archive as a relative path inside the snapshot, or why it is not one.
fn checked_path(raw: &Path) -> Result<PathBuf, SnapshotError> {
    let text = raw.to_string_lossy().to_string();
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(SnapshotError::Escapes { path: text }),
            Component::RootDir | Component::Prefix(_) => {
                return Err(SnapshotError::Absolute { path: text })
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(SnapshotError::Malformed {
            message: format!("an entry has an empty path ('{text}')"),
        });
    }
    Ok(out)
}

/// Check and unpack an uploaded snapshot into `dest` (which must not exist yet), returning what
/// it holds with its hash computed here, never taken from the client.
pub fn unpack(
    upload: impl Read,
    dest: &Path,
    limits: &SnapshotLimits,
) -> Result<SnapshotInfo, SnapshotError> {
    let malformed = |e: std::io::Error| SnapshotError::Malformed {
        message: e.to_string(),
    };
    std::fs::create_dir_all(dest).map_err(io("cannot create", dest))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(upload));
    let mut written: Vec<(String, PathBuf)> = Vec::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let raw = entry.path().map_err(malformed)?.into_owned();
        let rel = checked_path(&raw)?;
        let rel_text = rel.to_string_lossy().replace('\\', "/");
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => None,
            tar::EntryType::Directory => {
                let dir = dest.join(&rel);
                std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
                continue;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => Some("link"),
            tar::EntryType::Char | tar::EntryType::Block => Some("device"),
            tar::EntryType::Fifo => Some("named pipe"),
            // pax and GNU long-name records are read by the tar crate itself.
            _ => Some("special entry"),
        };
        if let Some(kind) = kind {
            return Err(SnapshotError::NotRegular {
                path: rel_text,
                kind,
            });
        }
        if written.len() >= limits.max_files {
            return Err(SnapshotError::TooManyFiles {
                limit: limits.max_files,
            });
        }
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        // Never through an earlier entry's path: a second entry of the same name is malformed.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    SnapshotError::Malformed {
                        message: format!("'{rel_text}' appears twice"),
                    }
                } else {
                    SnapshotError::Io {
                        action: "cannot write",
                        path: target.clone(),
                        source: e,
                    }
                }
            })?;
        // Bounded by what is read, not by what the header claims, and streamed: an entry is
        // never held whole in memory (a small compressed upload can inflate a great deal).
        let mut buf = [0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(malformed)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            total += n as u64;
            if size > limits.max_file_bytes {
                return Err(SnapshotError::FileTooLarge {
                    path: rel_text,
                    limit: limits.max_file_bytes,
                });
            }
            if total > limits.max_total_bytes {
                return Err(SnapshotError::TooLarge {
                    limit: limits.max_total_bytes,
                });
            }
            file.write_all(&buf[..n])
                .map_err(io("cannot write", &target))?;
        }
        written.push((rel_text, target));
    }
    written.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(SnapshotInfo {
        hash: hash_files(&written)?,
        files: written.len(),
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, ty, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *ty == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").expect("link name");
            }
            // Write the raw name so '..' and absolute paths reach the archive as an attacker would.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            tar.append(&h, *data).expect("append");
        }
        tar.into_inner().expect("tar").finish().expect("gz")
    }

    fn unpack_err(upload: &[u8], limits: SnapshotLimits) -> String {
        let dir = tempfile::tempdir().expect("tmp");
        unpack(upload, &dir.path().join("snap"), &limits)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn a_folder_round_trips_with_the_same_hash() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("flow.dag.yaml"), "nodes: []\n").expect("write");
        std::fs::create_dir_all(dir.path().join("lib")).expect("mkdir");
        std::fs::write(dir.path().join("lib/a.py"), "x = 1\n").expect("write");
        std::fs::create_dir_all(dir.path().join("__pycache__")).expect("mkdir");
        std::fs::write(dir.path().join("__pycache__/a.pyc"), "junk").expect("write");
        std::fs::write(dir.path().join(".amlignore"), "outputs/\n*.log\n").expect("write");
        std::fs::create_dir_all(dir.path().join("outputs")).expect("mkdir");
        std::fs::write(dir.path().join("outputs/big.jsonl"), "{}").expect("write");
        std::fs::write(dir.path().join("run.log"), "log").expect("write");
        let (upload, info) = pack(dir.path(), &SnapshotLimits::default()).expect("pack");
        assert_eq!(info.files, 3, "{info:?}"); // flow.dag.yaml, lib/a.py, .amlignore
        let out = tempfile::tempdir().expect("tmp");
        let unpacked = unpack(
            &upload[..],
            &out.path().join("s"),
            &SnapshotLimits::default(),
        )
        .expect("unpack");
        assert_eq!(unpacked, info);
        assert!(out.path().join("s/lib/a.py").is_file());
        assert!(!out.path().join("s/outputs").exists());
        // Touching a file without changing it keeps the hash; changing it does not.
        std::fs::write(dir.path().join("lib/a.py"), "x = 1\n").expect("write");
        assert_eq!(
            pack(dir.path(), &SnapshotLimits::default())
                .expect("pack")
                .1
                .hash,
            info.hash
        );
        std::fs::write(dir.path().join("lib/a.py"), "x = 2\n").expect("write");
        assert_ne!(
            pack(dir.path(), &SnapshotLimits::default())
                .expect("pack")
                .1
                .hash,
            info.hash
        );
    }

    #[test]
    fn a_link_out_of_the_folder_is_refused_when_packing() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("flow.dag.yaml"), "nodes: []\n").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("h")).expect("link");
        let err = pack(dir.path(), &SnapshotLimits::default()).expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("'h' is a link to /etc/hostname"),
            "{err}"
        );
    }

    #[test]
    fn hostile_archives_are_refused_with_what_and_where() {
        let reg = tar::EntryType::Regular;
        let d = SnapshotLimits::default();
        assert_eq!(
            unpack_err(&archive(&[("../evil.py", reg, b"x")]), d),
            "'../evil.py' leaves the flow folder ('..'); a snapshot holds only the flow's own files"
        );
        assert_eq!(
            unpack_err(&archive(&[("/etc/evil", reg, b"x")]), d),
            "'/etc/evil' is an absolute path; a snapshot holds paths relative to the flow folder"
        );
        assert!(
            unpack_err(&archive(&[("l", tar::EntryType::Symlink, b"")]), d)
                .starts_with("'l' is a link")
        );
        assert!(
            unpack_err(&archive(&[("dev", tar::EntryType::Char, b"")]), d)
                .starts_with("'dev' is a device")
        );
        assert!(unpack_err(b"not a tarball at all", d).starts_with("the upload is not a valid"));
        let small = SnapshotLimits {
            max_files: 1,
            max_file_bytes: 4,
            max_total_bytes: 6,
        };
        assert!(unpack_err(&archive(&[("a", reg, b"12345")]), small)
            .starts_with("'a' is larger than 4 bytes"));
        assert!(
            unpack_err(&archive(&[("a", reg, b"1"), ("b", reg, b"2")]), small)
                .starts_with("more than 1 files")
        );
        assert!(unpack_err(
            &archive(&[("a", reg, b"1"), ("a", reg, b"2")]),
            SnapshotLimits::default()
        )
        .contains("appears twice"));
    }
}
