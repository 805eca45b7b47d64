//! flowrt's local persistent state under `FLOWRT_HOME` (default `~/.flowrt`).
//!
//! It owns two stores, sharing one secret key:
//! - the **control-plane store** [`Store`]: SQLite at `<home>/flowrt.db` (sqlx, embedded
//!   migrations) holding users and their token hashes, computes, sessions, published custom
//!   environments, identities (feed tokens sealed), runs — see the `control` module — and the workspace's
//!   batch and evaluation runs (`workspace_runs`);
//! - **connections** ([`ConnectionStore`]): it parses promptflow connection YAML
//!   (`pf connection create --file`), and stores each connection as
//!   `<home>/connections/<name>.json` — name, type and configs in plain text, every secret sealed
//!   with ChaCha20-Poly1305 under the 32-byte key in `<home>/secret.key` (created on first use,
//!   mode 0600). Files are written atomically (temp file + rename) with mode 0600; a key file that
//!   group or others can access is refused. [`masked`] renders a connection for display without
//!   its secrets.
//!
//! It does not run anything: session lifecycles, environment builds and HTTP live elsewhere.

pub mod blobs;
mod control;
mod endpoints;
mod error;
pub mod fsutil;
mod parse;
mod records;
mod secret;
mod settings;
pub mod snapshot;
mod spread;
mod workspace_runs;

pub use blobs::{BlobMode, Blobs};
pub use endpoints::{
    endpoint_key_hash, Deployment, DeploymentInstance, Endpoint, ScoreFilter, ScoreRow,
    ENDPOINT_KEY_PREFIX,
};
pub use secret::use_key_file as use_secret_key_file;
pub use spread::{ChunkClaim, SpreadProgress, SpreadRun};
pub use workspace_runs::WorkspaceRun;

pub use control::{redact_url, Backend, Store, DB_FILE, OWNER_NAME, TOKEN_PREFIX};
pub use records::{
    AuditEntry, Compute, ComputeKind, ComputeStatus, ConnectionRecord, EnvironmentRecord,
    FlowRecord, FlowSaved, Identity, NewFlowVersion, NewSession, Role, RunKind, RunRecord,
    RunStatus, Session, TokenRecord, User,
};

pub use error::StoreError;
pub use parse::{DEFAULT_AZURE_API_TYPE, DEFAULT_AZURE_API_VERSION};

use flowrt_api::{Connection, ConnectionKind};
use indexmap::IndexMap;
use secret::SecretKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What `show`/`list` print in place of a secret value.
pub const MASK: &str = "******";

/// File name of the secret key under the home directory.
pub const SECRET_KEY_FILE: &str = "secret.key";

/// Directory of connection files under the home directory.
pub const CONNECTIONS_DIR: &str = "connections";

const MAX_NAME_LEN: usize = 200;

/// The longest file name (without `.json`) a connection is kept under: file systems allow 255
/// bytes, and an escaped character takes three a byte.
const MAX_STEM_LEN: usize = 240;
const FORMAT_VERSION: u32 = 1;

/// flowrt's home: `$FLOWRT_HOME` if set and non-empty, else `$HOME/.flowrt`
/// (`%USERPROFILE%\.flowrt` on Windows), else `.flowrt` in the current directory.
pub fn flowrt_home() -> PathBuf {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(home) = non_empty("FLOWRT_HOME") {
        return PathBuf::from(home);
    }
    match non_empty("HOME").or_else(|| non_empty("USERPROFILE")) {
        Some(user_home) => PathBuf::from(user_home).join(".flowrt"),
        None => PathBuf::from(".flowrt"),
    }
}

/// Check that `name` is usable as a connection name: promptflow accepts any name (spaces,
/// `/`, `:`, non-ASCII letters), and so does flowrt, with 1–200 characters and no control
/// character (a name is shown on one line and written in YAML). The file it is kept in is named
/// by [`file_stem`], never by the name as given.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && !name.chars().any(char::is_control)
        && file_stem(name).len() <= MAX_STEM_LEN;
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// A name that is a file name as it is: 1–200 characters from `[A-Za-z0-9_.-]`, not starting
/// with `.` (a user id; a connection name kept under its own name).
fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Check a user id, which names a folder: [`is_plain`].
fn validate_user_id(id: &str) -> Result<(), StoreError> {
    if is_plain(id) {
        Ok(())
    } else {
        Err(StoreError::InvalidUserId { id: id.to_string() })
    }
}

/// The bytes a connection's file name escapes: all but letters, digits, `_` and `-` (so `.`,
/// `/` and `%` itself are escaped, and an escaped name always holds a `%`).
const ESCAPED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'_').remove(b'-');

/// The file name (without `.json`) connection `name` is kept under: the name itself when it is
/// plain (as every earlier flowrt wrote it), else its percent-escaped form, which holds no
/// separator, no leading dot and a `%` no plain name has: no name reaches another's file or
/// leaves the folder.
fn file_stem(name: &str) -> std::borrow::Cow<'_, str> {
    if is_plain(name) {
        name.into()
    } else {
        percent_encoding::utf8_percent_encode(name, ESCAPED).into()
    }
}

/// The connection name a file stem stands for; `None` for a file that is not a connection's
/// (a temporary file, an escaped form flowrt would not write).
fn name_of_stem(stem: &str) -> Option<String> {
    if !stem.contains('%') {
        return is_plain(stem).then(|| stem.to_string());
    }
    let name = percent_encoding::percent_decode_str(stem)
        .decode_utf8()
        .ok()?
        .into_owned();
    (validate_name(&name).is_ok() && file_stem(&name) == stem).then_some(name)
}

/// On-disk form of a connection: secrets sealed, the rest plain.
#[derive(Serialize, Deserialize)]
struct StoredConnection {
    format: u32,
    name: String,
    #[serde(rename = "type")]
    kind: ConnectionKind,
    configs: IndexMap<String, String>,
    /// field → base64(nonce || ciphertext || tag)
    secrets: IndexMap<String, String>,
}

/// Connections stored under `<home>/connections/`, secrets encrypted with `<home>/secret.key`.
#[derive(Debug)]
pub struct ConnectionStore {
    home: PathBuf,
    /// Where the connection files are: `<home>/connections`, or a workspace user's folder.
    dir: PathBuf,
    key: OnceLock<SecretKey>,
}

impl ConnectionStore {
    /// A store rooted at `home`. Touches nothing on disk: directories and the key are created on
    /// first write.
    pub fn open(home: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            home: home.to_path_buf(),
            dir: home.join(CONNECTIONS_DIR),
            key: OnceLock::new(),
        })
    }

    /// The connections a workspace user created on a server under `home`: their own folder
    /// (`<home>/workspace/connections/<user id>`), sealed with the same key.
    pub fn for_user(home: &Path, user_id: &str) -> Result<Self, StoreError> {
        validate_user_id(user_id)?;
        Ok(Self {
            home: home.to_path_buf(),
            dir: home.join("workspace").join(CONNECTIONS_DIR).join(user_id),
            key: OnceLock::new(),
        })
    }

    /// Parse promptflow connection YAML text; `origin` names it in errors.
    pub fn parse_yaml_text(text: &str, origin: &str) -> Result<Connection, StoreError> {
        parse::parse_str(text, Path::new(origin))
    }

    /// The home directory this store lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Parse a promptflow connection YAML file (`name`, `type`, and the type's fields).
    pub fn parse_yaml(path: &Path) -> Result<Connection, StoreError> {
        let text = fs_err::read_to_string(path)?;
        parse::parse_str(&text, path)
    }

    /// Parse a promptflow connection YAML file and store it, replacing any connection of that name.
    pub fn create_from_file(&self, path: &Path) -> Result<Connection, StoreError> {
        let conn = Self::parse_yaml(path)?;
        self.upsert(&conn)?;
        Ok(conn)
    }

    /// Create or replace the connection `conn.name`.
    pub fn upsert(&self, conn: &Connection) -> Result<(), StoreError> {
        validate_name(&conn.name)?;
        let mut secrets = IndexMap::new();
        if !conn.secrets.is_empty() {
            let key = self.key()?;
            for (field, value) in &conn.secrets {
                secrets.insert(field.clone(), key.seal(&conn.name, field, value)?);
            }
        }
        let stored = StoredConnection {
            format: FORMAT_VERSION,
            name: conn.name.clone(),
            kind: conn.kind,
            configs: conn.configs.clone(),
            secrets,
        };
        let path = self.path_of(&conn.name);
        let mut bytes = serde_json::to_vec_pretty(&stored).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        fsutil::write_private(&path, &bytes)
    }

    /// The connection `name`, decrypted; `None` if there is none.
    pub fn get(&self, name: &str) -> Result<Option<Connection>, StoreError> {
        validate_name(name)?;
        let path = self.path_of(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::IoAt {
                    action: "cannot read",
                    path,
                    source,
                })
            }
        };
        self.decode(&path, name, &bytes).map(Some)
    }

    /// Every stored connection, decrypted, sorted by name.
    pub fn list(&self) -> Result<Vec<Connection>, StoreError> {
        let dir = self.connections_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::IoAt {
                    action: "cannot list",
                    path: dir,
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::IoAt {
                action: "cannot list",
                path: dir.clone(),
                source,
            })?;
            let file_name = entry.file_name();
            // Skips temp files (`.tmp-*`) and anything else that is not a connection.
            if let Some(name) = file_name
                .to_str()
                .and_then(|f| f.strip_suffix(".json"))
                .and_then(name_of_stem)
            {
                names.push(name);
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // A file removed between read_dir and get is simply gone.
            if let Some(conn) = self.get(&name)? {
                out.push(conn);
            }
        }
        Ok(out)
    }

    /// Delete the connection `name`; `false` if there was none.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        validate_name(name)?;
        let path = self.path_of(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::IoAt {
                action: "cannot delete",
                path,
                source,
            }),
        }
    }

    /// The folder this store keeps its connection files in.
    pub fn connections_dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The file connection `name` is kept in (whether it exists or not).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.connections_dir()
            .join(format!("{}.json", file_stem(name)))
    }

    fn key(&self) -> Result<&SecretKey, StoreError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let key = crate::secret::load_key(&self.home)?;
        // If another thread won, its key is the same file's key.
        Ok(self.key.get_or_init(|| key))
    }

    fn decode(&self, path: &Path, name: &str, bytes: &[u8]) -> Result<Connection, StoreError> {
        let stored: StoredConnection =
            serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if stored.format != FORMAT_VERSION {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("unsupported format version {}", stored.format),
            });
        }
        if stored.name != name {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("holds connection `{}`, expected `{name}`", stored.name),
            });
        }
        let mut secrets = IndexMap::new();
        if !stored.secrets.is_empty() {
            let key = self.key()?;
            for (field, sealed) in &stored.secrets {
                secrets.insert(field.clone(), key.open(name, field, sealed)?);
            }
        }
        Ok(Connection {
            name: stored.name,
            kind: stored.kind,
            configs: stored.configs,
            secrets,
        })
    }
}

/// A connection for display (`connection show` / `list`), secrets replaced by [`MASK`]:
/// `{"name", "type", <plain fields flattened, typed kinds only>, "configs": {..}, "secrets": {..}}`.
/// For typed kinds the flattened fields include `"api_key": "******"`, as promptflow shows it.
pub fn masked(conn: &Connection) -> Value {
    let secrets: Map<String, Value> = conn
        .secrets
        .keys()
        .map(|k| (k.clone(), json!(MASK)))
        .collect();
    let configs: Map<String, Value> = conn
        .configs
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut out = Map::new();
    out.insert("name".into(), json!(conn.name));
    out.insert("type".into(), json!(conn.kind.as_str()));
    if conn.kind != ConnectionKind::Custom {
        let flattened = secrets.iter().chain(configs.iter());
        for (k, v) in flattened {
            if !matches!(k.as_str(), "name" | "type" | "configs" | "secrets") {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    out.insert("configs".into(), Value::Object(configs));
    out.insert("secrets".into(), Value::Object(secrets));
    Value::Object(out)
}

pub mod testing {
    //! For tests of flowrt's crates that run against PostgreSQL: the server `./scripts/test.sh`
    //! starts is named by `FLOWRT_TEST_POSTGRES`; each test makes a database of its own in it.

    use sqlx::{Connection, Executor, Row};

    /// The test server's URL: `FLOWRT_TEST_POSTGRES`. Under CI (`CI` set) its absence is an
    /// error, so the Postgres half of a test cannot pass by being skipped.
    pub fn postgres_url() -> Option<String> {
        match std::env::var("FLOWRT_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var_os("CI").is_some() => panic!(
                "FLOWRT_TEST_POSTGRES is not set; run the tests with ./scripts/test.sh, which starts PostgreSQL"
            ),
            _ => None,
        }
    }

    /// A new, empty database on the test server; returns its URL.
    pub async fn fresh_database(admin_url: &str) -> Result<String, sqlx::Error> {
        let mut bytes = [0u8; 6];
        getrandom::getrandom(&mut bytes).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let name = format!("flowrt_test_{}", hex::encode(bytes));
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        conn.close().await?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(admin_url);
        Ok(format!("{base}/{name}"))
    }

    /// Whether any row of any table of the database at `url` holds `needle` in its text form:
    /// what a test of "no secret in the database in plain text" reads.
    pub async fn database_contains(url: &str, needle: &str) -> Result<bool, sqlx::Error> {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let tables: Vec<String> =
            sqlx::query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                .fetch_all(&mut conn)
                .await?
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect();
        for table in tables {
            let hit = sqlx::query(&format!(
                "SELECT 1 FROM \"{table}\" t WHERE strpos(t::text, $1) > 0 LIMIT 1"
            ))
            .bind(needle)
            .fetch_optional(&mut conn)
            .await?;
            if hit.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
