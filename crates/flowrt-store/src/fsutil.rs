//! Atomic, private (mode 0600) file writes and private (0700) directories, and copying a folder
//! tree with a filter (run snapshots, merged includes, session flow copies).

use crate::error::StoreError;
use std::io::Write;
use std::path::Path;

/// Create `dir` (and parents) if missing; directories this creates are mode 0700 on unix.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StoreError::IoAt {
        action: "cannot create directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Write `bytes` to a private temp file next to `path`, fsync it, and hand it back for persisting.
fn private_temp(path: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, StoreError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    ensure_private_dir(dir)?;
    let io_err = |source| StoreError::IoAt {
        action: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-").suffix(".partial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io_err)?;
    tmp.write_all(bytes).map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    Ok(tmp)
}

/// Atomically create or replace `path` with `bytes`, mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = private_temp(path, bytes)?;
    tmp.persist(path).map_err(|e| StoreError::IoAt {
        action: "cannot write",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Atomically create `path` with `bytes`, mode 0600; fails with `AlreadyExists` if it exists.
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = private_temp(path, bytes)?;
    tmp.persist_noclobber(path).map_err(|e| StoreError::IoAt {
        action: "cannot create",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// What [`copy_tree`] leaves out.
#[derive(Clone, Debug, Default)]
pub struct CopyFilter<'a> {
    /// Entries with these names (caches, version control, generated folders).
    pub skip_names: &'a [&'a str],
    /// Entries whose name starts with a dot.
    pub skip_hidden: bool,
    /// One folder (canonical path) left out: a run's own output folder inside the flow.
    pub skip_dir: Option<&'a Path>,
    /// Copy what symlinks point to (files only); without it links are left out, since a link
    /// could name anything on this machine.
    pub symlinks: bool,
}

impl CopyFilter<'_> {
    fn skips(&self, name: &str) -> bool {
        (self.skip_hidden && name.starts_with('.')) || self.skip_names.contains(&name)
    }
}

/// Copy the folder `src` into `dst` (created when missing): regular files and folders, and with
/// [`CopyFilter::symlinks`] the files links point to, leaving out what `filter` names. Every
/// error names its path.
pub fn copy_tree(src: &Path, dst: &Path, filter: &CopyFilter<'_>) -> std::io::Result<()> {
    fs_err::create_dir_all(dst)?;
    for entry in fs_err::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if filter.skips(&name.to_string_lossy()) {
            continue;
        }
        let ty = entry.file_type()?;
        if ty.is_dir() {
            if filter.skip_dir.is_some()
                && entry.path().canonicalize().ok().as_deref() == filter.skip_dir
            {
                continue;
            }
            copy_tree(&entry.path(), &dst.join(&name), filter)?;
        } else if ty.is_file() || (filter.symlinks && ty.is_symlink()) {
            fs_err::copy(entry.path(), dst.join(&name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    #[test]
    fn copy_tree_leaves_out_what_the_filter_names() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        let s = src.path();
        for d in ["sub", "__pycache__", ".git", "out"] {
            std::fs::create_dir_all(s.join(d)).expect("mkdir");
        }
        for f in [
            "a.txt",
            "sub/b.txt",
            "__pycache__/c.pyc",
            ".git/HEAD",
            "out/x",
            ".env",
        ] {
            std::fs::write(s.join(f), f).expect("write");
        }
        std::os::unix::fs::symlink(s.join("a.txt"), s.join("link.txt")).expect("symlink");
        let out = s.join("out").canonicalize().expect("canonical");
        let filter = CopyFilter {
            skip_names: &["__pycache__"],
            skip_hidden: true,
            skip_dir: Some(&out),
            symlinks: false,
        };
        let to = dst.path().join("copy");
        copy_tree(s, &to, &filter).expect("copy");
        let mut got: Vec<String> = walk(&to);
        got.sort();
        assert_eq!(got, ["a.txt", "sub/b.txt"]);
        let with_links = CopyFilter {
            symlinks: true,
            ..filter
        };
        let to2 = dst.path().join("copy2");
        copy_tree(s, &to2, &with_links).expect("copy");
        assert_eq!(
            std::fs::read_to_string(to2.join("link.txt")).expect("read"),
            "a.txt"
        );
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if let Ok(rel) = e.path().strip_prefix(root) {
                    out.push(rel.display().to_string());
                }
            }
        }
        out
    }
}
