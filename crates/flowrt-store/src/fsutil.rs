//! Atomic, private (mode 0600) file writes and private (0700) directories.

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
