//! Where the workspace's files live: flow snapshots, uploaded data, runs' line records and logs,
//! and workspace connections.
//!
//! A server always works on files under its own `FLOWRT_HOME`. With [`BlobMode::Folder`] (one
//! machine, or servers that mount one home) that folder is the only copy. With
//! [`BlobMode::Database`] the database holds the copy every server sees, and each server's folder
//! is a cache of it: what a server writes it publishes ([`Blobs::publish_file`],
//! [`Blobs::publish_tail`]), and what it reads it first brings up to date ([`Blobs::fetch_file`],
//! [`Blobs::sync_dir`]). Servers then share nothing but the database.
//!
//! A blob's key is its path relative to the home (`data/u-1/ab…cd.jsonl`). The database keeps
//! each blob as chunks of at most [`CHUNK`] bytes at their offsets: a run's files grow by appends
//! (one chunk each, never rewritten, so two servers can never interleave half-writes), and a file
//! written whole (`whole = 1`: a snapshot's archive, data, metrics, a connection) replaces its
//! chunks in one transaction.

use crate::control::{db, get, Store};
use crate::error::StoreError;
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

/// The most bytes of one database row: a large upload is stored, and read back, a chunk at a time.
pub const CHUNK: usize = 1024 * 1024;

/// Where a server keeps the workspace's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobMode {
    /// In the server's `FLOWRT_HOME` only.
    Folder,
    /// In the database, shared by every server on it; each server's folder caches it.
    Database,
}

impl BlobMode {
    pub fn parse(text: &str) -> Option<BlobMode> {
        match text {
            "folder" => Some(BlobMode::Folder),
            "database" => Some(BlobMode::Database),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BlobMode::Folder => "folder",
            BlobMode::Database => "database",
        }
    }
}

/// The workspace's files for one server: its home, and the database when it is shared there.
#[derive(Clone, Debug)]
pub struct Blobs {
    home: PathBuf,
    shared: Option<Store>,
    mirror_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The version of each file written whole that this cache holds (this server's own writes,
    /// and what it fetched): a file at that version is not fetched again.
    cached_versions: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

/// A stored blob's size, and the version of the write that stored it whole (`0`: it grows by
/// appends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    len: u64,
    version: i64,
}

impl Blobs {
    /// Files under `home` only.
    pub fn folder(home: &Path) -> Blobs {
        Blobs {
            home: home.to_path_buf(),
            shared: None,
            mirror_lock: Default::default(),
            cached_versions: Default::default(),
        }
    }

    /// Files in `store`'s database, cached under `home` (the server's own).
    pub fn database(store: &Store, home: &Path) -> Blobs {
        Blobs {
            home: home.to_path_buf(),
            shared: Some(store.clone()),
            mirror_lock: Default::default(),
            cached_versions: Default::default(),
        }
    }

    pub fn mode(&self) -> BlobMode {
        if self.shared.is_some() {
            BlobMode::Database
        } else {
            BlobMode::Folder
        }
    }

    /// The key of `path`: its path under the home, `/`-separated. Anything else (outside the home,
    /// `..`) is refused: a key is never a way out of the cache.
    fn key(&self, path: &Path) -> Result<String, StoreError> {
        let rel = path.strip_prefix(&self.home).map_err(|_| outside(path))?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| outside(path))?),
                _ => return Err(outside(path)),
            }
        }
        if parts.is_empty() {
            return Err(outside(path));
        }
        Ok(parts.join("/"))
    }

    /// The cache path of `key` (checked as [`Blobs::key`] checks paths).
    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let path = self.home.join(key);
        self.key(&path)?;
        Ok(path)
    }

    /// Store the file at `path` (under the home) as a whole: it replaces what was stored.
    pub async fn publish_file(&self, path: &Path) -> Result<(), StoreError> {
        let Some(store) = &self.shared else {
            return Ok(());
        };
        let key = self.key(path)?;
        let mut file = open(path)?;
        let version = new_version()?;
        let mut tx = store.pool.begin().await.map_err(db("storing a file"))?;
        sqlx::query("DELETE FROM blobs WHERE key = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(db(format!("storing {key}")))?;
        let mut at = 0u64;
        loop {
            let piece = read_piece(&mut file, path)?;
            if piece.is_empty() && at > 0 {
                break;
            }
            let len = piece.len() as u64;
            sqlx::query("INSERT INTO blobs (key, at, data, whole) VALUES ($1, $2, $3, $4)")
                .bind(&key)
                .bind(i64::try_from(at).unwrap_or(i64::MAX))
                .bind(piece)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db(format!("storing {key}")))?;
            at += len;
            if len < CHUNK as u64 {
                break;
            }
        }
        tx.commit().await.map_err(db(format!("storing {key}")))?;
        self.cache_holds(&key, version);
        Ok(())
    }

    /// Whether this cache holds version `version` of the file `key` written whole.
    fn cache_has(&self, key: &str, version: i64) -> bool {
        self.cached_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            == Some(&version)
    }

    fn cache_holds(&self, key: &str, version: i64) {
        self.cached_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), version);
    }

    /// Store what the file at `path` holds past what is stored of it (a file that only grows).
    pub async fn publish_tail(&self, path: &Path) -> Result<(), StoreError> {
        let Some(store) = &self.shared else {
            return Ok(());
        };
        let key = self.key(path)?;
        let stored = stored_len(store, &key).await?.map_or(0, |s| s.len);
        let mut file = open(path)?;
        file.seek(SeekFrom::Start(stored))
            .map_err(|source| io_at("cannot read", path, source))?;
        let mut at = stored;
        loop {
            let piece = read_piece(&mut file, path)?;
            if piece.is_empty() {
                return Ok(());
            }
            let len = piece.len() as u64;
            // Another server may have stored the same piece first: it is the same bytes.
            sqlx::query(
                "INSERT INTO blobs (key, at, data, whole) VALUES ($1, $2, $3, 0)
                 ON CONFLICT (key, at) DO NOTHING",
            )
            .bind(&key)
            .bind(i64::try_from(at).unwrap_or(i64::MAX))
            .bind(piece)
            .execute(&store.pool)
            .await
            .map_err(db(format!("storing {key}")))?;
            at += len;
        }
    }

    /// Make sure the file at `path` (under the home) is in the cache; `false` when it is stored
    /// nowhere. A file present is taken as it is: use this for files that never change once
    /// written (content-addressed snapshots and data).
    pub async fn fetch_file(&self, path: &Path) -> Result<bool, StoreError> {
        if path.is_file() {
            return Ok(true);
        }
        let Some(store) = &self.shared else {
            return Ok(false);
        };
        let key = self.key(path)?;
        if stored_len(store, &key).await?.is_none() {
            return Ok(false);
        }
        let parent = path.parent().unwrap_or(&self.home);
        crate::fsutil::ensure_private_dir(parent)?;
        let tmp = parent.join(fetching_name());
        let written = copy_out(store, &key, &tmp, 0, false).await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(|source| io_at("cannot write", path, source))?;
        Ok(true)
    }

    /// The size of the file at `path`, here or stored; `None` when it is neither.
    pub async fn file_len(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if m.is_file() {
                return Ok(Some(m.len()));
            }
        }
        match &self.shared {
            Some(store) => Ok(stored_len(store, &self.key(path)?).await?.map(|s| s.len)),
            None => Ok(None),
        }
    }

    /// The bytes of every file under the folder `dir`: stored (every server's), or here.
    pub async fn bytes_under(&self, dir: &Path) -> Result<u64, StoreError> {
        let Some(store) = &self.shared else {
            let dir = dir.to_path_buf();
            return tokio::task::spawn_blocking(move || {
                let files = if dir.is_dir() {
                    files_under(&dir)?
                } else {
                    Vec::new()
                };
                Ok(files
                    .iter()
                    .filter_map(|p| std::fs::symlink_metadata(p).ok())
                    .map(|m| m.len())
                    .sum())
            })
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        };
        let prefix = format!("{}/", self.key(dir)?);
        Ok(stored_under(store, &prefix)
            .await?
            .values()
            .map(|s| s.len)
            .sum())
    }

    /// Store every file under the folder `dir` (a flow snapshot: files that never change).
    pub async fn publish_tree(&self, dir: &Path) -> Result<(), StoreError> {
        if self.shared.is_none() {
            return Ok(());
        }
        for path in files_under(dir)? {
            self.publish_file(&path).await?;
        }
        Ok(())
    }

    /// Make sure the folder `dir` (a flow snapshot stored with [`Blobs::publish_tree`]) is in the
    /// cache, whole: fetched aside, then renamed into place. `false` when it is stored nowhere.
    pub async fn fetch_tree(&self, dir: &Path) -> Result<bool, StoreError> {
        if dir.is_dir() {
            return Ok(true);
        }
        let Some(store) = &self.shared else {
            return Ok(false);
        };
        let prefix = format!("{}/", self.key(dir)?);
        let stored = stored_under(store, &prefix).await?;
        if stored.is_empty() {
            return Ok(false);
        }
        let parent = dir.parent().unwrap_or(&self.home);
        crate::fsutil::ensure_private_dir(parent)?;
        let tmp = parent.join(fetching_name());
        let fetched = async {
            for key in stored.keys() {
                let rel = &key[prefix.len()..];
                let path = self.path_of(&format!("{}/{rel}", self.key(&tmp)?))?;
                if let Some(p) = path.parent() {
                    crate::fsutil::ensure_private_dir(p)?;
                }
                copy_out(store, key, &path, 0, false).await?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = fetched {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, dir) {
            Ok(()) => Ok(true),
            // Fetched by another request meanwhile: the same files.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(true)
            }
            Err(e) => Err(io_at("cannot write", dir, e)),
        }
    }

    /// Bring the folder `dir` (under the home) up to date with what is stored under it: files
    /// that grew get their new bytes, and files written whole are fetched when the cache does
    /// not hold their stored version. A file longer
    /// here than stored is this server's own, not stored yet, and kept. With `mirror`, files no
    /// longer stored are removed (another server deleted them): hold [`Blobs::guard`] across a
    /// write and its publishing in such a folder, so this never removes a file on its way.
    pub async fn sync_dir(&self, dir: &Path, mirror: bool) -> Result<(), StoreError> {
        let Some(store) = &self.shared else {
            return Ok(());
        };
        let _guard = if mirror {
            Some(self.guard().await)
        } else {
            None
        };
        let prefix = format!("{}/", self.key(dir)?);
        let stored = stored_under(store, &prefix).await?;
        for (key, s) in &stored {
            let path = self.path_of(key)?;
            let local = std::fs::symlink_metadata(&path).ok();
            if local.as_ref().is_some_and(|m| !m.is_file()) {
                return Err(outside(&path));
            }
            let have = local.map_or(0, |m| m.len());
            if let Some(parent) = path.parent() {
                crate::fsutil::ensure_private_dir(parent)?;
            }
            if s.version != 0 {
                if !(have == s.len && self.cache_has(key, s.version)) {
                    copy_out(store, key, &path, 0, false).await?;
                    self.cache_holds(key, s.version);
                }
            } else if have < s.len {
                copy_out(store, key, &path, have, true).await?;
            }
        }
        if mirror {
            self.remove_unstored(dir, &stored)?;
        }
        Ok(())
    }

    /// Remove the cached files under `dir` that are not stored (hidden working files aside).
    fn remove_unstored(
        &self,
        dir: &Path,
        stored: &BTreeMap<String, Stored>,
    ) -> Result<(), StoreError> {
        if !dir.is_dir() {
            return Ok(());
        }
        for path in files_under(dir)? {
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && !stored.contains_key(&self.key(&path)?) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// Held across writing a file in a mirrored folder and publishing it (see
    /// [`Blobs::sync_dir`]).
    pub async fn guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.mirror_lock.lock().await
    }

    /// Forget everything stored under the folder `dir`, and remove it here.
    pub async fn delete_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if let Some(store) = &self.shared {
            let prefix = format!("{}/", self.key(dir)?);
            sqlx::query("DELETE FROM blobs WHERE key >= $1 AND key < $2")
                .bind(&prefix)
                .bind(prefix_end(&prefix))
                .execute(&store.pool)
                .await
                .map_err(db(format!("deleting {prefix}")))?;
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_at("cannot remove", dir, e))
            }
            _ => Ok(()),
        }
    }

    /// Forget the file at `path`, and remove it here.
    pub async fn delete_file(&self, path: &Path) -> Result<(), StoreError> {
        if let Some(store) = &self.shared {
            let key = self.key(path)?;
            sqlx::query("DELETE FROM blobs WHERE key = $1")
                .bind(&key)
                .execute(&store.pool)
                .await
                .map_err(db(format!("deleting {key}")))?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_at("cannot remove", path, e))
            }
            _ => Ok(()),
        }
    }

    /// Store every file under `dirs` (under the home) that is not stored yet: what a home kept
    /// before its server shared its files through the database. Returns how many were stored.
    pub async fn publish_missing(&self, dirs: &[PathBuf]) -> Result<usize, StoreError> {
        let Some(store) = &self.shared else {
            return Ok(0);
        };
        let mut stored = 0;
        for dir in dirs {
            if !dir.is_dir() {
                continue;
            }
            let prefix = format!("{}/", self.key(dir)?);
            let known = stored_under(store, &prefix).await?;
            for path in files_under(dir)? {
                let key = self.key(&path)?;
                // Hidden files are a server's own working files (uploads on their way, marks).
                let hidden = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !hidden && !known.contains_key(&key) {
                    self.publish_file(&path).await?;
                    stored += 1;
                }
            }
        }
        Ok(stored)
    }
}

/// Where `home` has a file another server recorded by its path in that server's
/// home (`/srv/a/data/u-1/x.jsonl`): the same path under `area` (`data`, `snapshots`) here.
/// `None` when the path has no such part, or climbs out of it.
pub fn rebase(home: &std::path::Path, stored: &std::path::Path, area: &str) -> Option<PathBuf> {
    use std::path::Component;
    let parts: Vec<Component> = stored.components().collect();
    let at = parts
        .iter()
        .rposition(|c| matches!(c, Component::Normal(n) if *n == std::ffi::OsStr::new(area)))?;
    let mut out = home.join(area);
    let rest = &parts[at + 1..];
    if rest.is_empty() {
        return None;
    }
    for c in rest {
        match c {
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    Some(out)
}

/// A name for a file or folder being fetched, unique in this process and among processes.
fn fetching_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        ".fetching-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn outside(path: &Path) -> StoreError {
    StoreError::IoAt {
        action: "refusing a blob path outside the home",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    }
}

fn io_at(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::IoAt {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Open a cached file without following a link in its last component.
fn open(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(nix::libc::O_NOFOLLOW);
    }
    options
        .open(path)
        .map_err(|source| io_at("cannot read", path, source))
}

/// Up to [`CHUNK`] bytes of `file`, fewer only at its end.
fn read_piece(file: &mut std::fs::File, path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut piece = Vec::with_capacity(CHUNK);
    Read::by_ref(file)
        .take(CHUNK as u64)
        .read_to_end(&mut piece)
        .map_err(|source| io_at("cannot read", path, source))?;
    Ok(piece)
}

/// A version for a file written whole: random, positive, so two servers' writes of one file
/// never share one (a blob that grows by appends has version 0).
fn new_version() -> Result<i64, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        StoreError::Io(std::io::Error::other(format!(
            "cannot draw a blob version: {e}"
        )))
    })?;
    Ok((i64::from_le_bytes(bytes) & i64::MAX).max(1))
}

/// The first key after every key starting with `prefix` (which ends in `/`): a range scan, so
/// the `_` and `%` of names are not LIKE patterns.
fn prefix_end(prefix: &str) -> String {
    format!("{}0", prefix.trim_end_matches('/'))
}

async fn stored_len(store: &Store, key: &str) -> Result<Option<Stored>, StoreError> {
    let row = sqlx::query(
        "SELECT MAX(at + length(data)) AS len, MAX(whole) AS whole FROM blobs WHERE key = $1",
    )
    .bind(key)
    .fetch_one(&store.pool)
    .await
    .map_err(db(format!("reading {key}")))?;
    let len: Option<i64> = get(&row, "len")?;
    let whole: Option<i64> = get(&row, "whole")?;
    Ok(len.map(|len| Stored {
        len: u64::try_from(len).unwrap_or(0),
        version: whole.unwrap_or(0),
    }))
}

async fn stored_under(store: &Store, prefix: &str) -> Result<BTreeMap<String, Stored>, StoreError> {
    let rows = sqlx::query(
        "SELECT key, MAX(at + length(data)) AS len, MAX(whole) AS whole FROM blobs
         WHERE key >= $1 AND key < $2 GROUP BY key",
    )
    .bind(prefix)
    .bind(prefix_end(prefix))
    .fetch_all(&store.pool)
    .await
    .map_err(db(format!("listing {prefix}")))?;
    let mut out = BTreeMap::new();
    for r in &rows {
        let len: i64 = get(r, "len")?;
        let whole: i64 = get(r, "whole")?;
        out.insert(
            get::<String>(r, "key")?,
            Stored {
                len: u64::try_from(len).unwrap_or(0),
                version: whole,
            },
        );
    }
    Ok(out)
}

/// Write `key`'s bytes from `from` on into `path`: appended to it (`append`), or as the whole
/// file (written aside, then renamed, so a reader never sees half).
async fn copy_out(
    store: &Store,
    key: &str,
    path: &Path,
    from: u64,
    append: bool,
) -> Result<(), StoreError> {
    let target = if append {
        path.to_path_buf()
    } else {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
        path.with_file_name(format!(".{name}{}.part", fetching_name()))
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(nix::libc::O_NOFOLLOW);
    }
    let mut file = options
        .open(&target)
        .map_err(|source| io_at("cannot write", &target, source))?;
    let from_i = i64::try_from(from).unwrap_or(i64::MAX);
    let mut rows = sqlx::query(
        "SELECT at, data FROM blobs WHERE key = $1 AND at + length(data) > $2 ORDER BY at",
    )
    .bind(key)
    .bind(from_i)
    .fetch(&store.pool);
    let mut next = from;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(db(format!("reading {key}")))?
    {
        let at: i64 = get(&row, "at")?;
        let data: Vec<u8> = get(&row, "data")?;
        let at = u64::try_from(at).unwrap_or(0);
        if at > next {
            // A gap: a piece not stored (yet). What follows it waits for the next sync.
            break;
        }
        let skip = usize::try_from(next - at)
            .unwrap_or(usize::MAX)
            .min(data.len());
        file.write_all(&data[skip..])
            .map_err(|source| io_at("cannot write", &target, source))?;
        next = at + data.len() as u64;
    }
    drop(rows);
    if !append {
        std::fs::rename(&target, path).map_err(|source| io_at("cannot write", path, source))?;
    }
    Ok(())
}

/// Every regular file under `dir`, links and special files left out.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| io_at("cannot list", &d, source))?;
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_file() && !e.file_name().to_string_lossy().starts_with(".fetching-") {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}
