//! The control plane's store: SQLite at `<FLOWRT_HOME>/flowrt.db` (WAL, busy timeout), or a
//! PostgreSQL database that several servers share, through sqlx's Any driver; migrated on open
//! from the SQL files embedded from `migrations/sqlite` or `migrations/postgres`. Typed async methods per table: users
//! (bearer tokens stored as sha256 only), computes, sessions, custom environments, identities (feed
//! tokens sealed with the connection store's key) and runs. Queries are checked at run time; no
//! database is needed to build.

use crate::error::StoreError;
use crate::fsutil;
use crate::records::*;
use crate::secret::SecretKey;
use crate::MASK;
use flowrt_api::{PreparingPhase, SessionSize, SessionStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyPool;
use sqlx::ConnectOptions;
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File name of the database under the home directory.
pub const DB_FILE: &str = "flowrt.db";
/// Prefix of every bearer token.
pub const TOKEN_PREFIX: &str = "frt_";
/// Name of the user [`Store::ensure_owner`] creates.
pub const OWNER_NAME: &str = "owner";

const LOCK_FILE: &str = "flowrt.db.lock";
/// Set on every SQLite connection: wait for a writer up to 30 s rather than fail, and sync at
/// checkpoints only (WAL makes that safe against corruption; a crash loses at most the last
/// commits, never the file).
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 30000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";
const MAX_CONNECTIONS: u32 = 8;
/// Postgres serves many connections well; each server keeps its own pool.
const PG_MAX_CONNECTIONS: u32 = 16;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Store`] is on. The SQL is shared but for the few places the two differ
/// (aggregating into JSON, row locks), which ask this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `<home>/flowrt.db`: one server on one machine.
    Sqlite,
    /// A PostgreSQL database: several servers share it.
    Postgres,
}

impl Backend {
    /// What a claim's `SELECT … LIMIT 1` ends with so that servers claiming at once take
    /// different rows without waiting on each other. SQLite has one writer at a time: nothing.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

/// The control-plane database. Cheap to clone; every clone shares one connection pool. Several
/// handles (and processes) may open one database at once.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    home: PathBuf,
    key: Arc<OnceLock<SecretKey>>,
}

impl Store {
    /// Open (creating if missing, mode 0600) `<home>/flowrt.db` and apply pending migrations.
    /// Opening and migrating are serialized across processes by a lock file beside the database.
    pub async fn open(home: &Path) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        fsutil::ensure_private_dir(home)?;
        let path = home.join(DB_FILE);
        // Through the Any driver only the file and its open mode survive from these options
        // (its URL carries nothing else): the pragmas are set on every connection below.
        let url = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .to_url_lossy();
        let options = AnyConnectOptions::from_url(&url).map_err(|source| StoreError::Db {
            action: format!("cannot open database {}", path.display()),
            source,
        })?;
        // Opening (which switches the file to WAL) and migrating are serialized across handles
        // and processes: two doing it at once could get "database is locked" at once, whatever
        // the busy timeout, when both try to take the write lock a read has already begun.
        let lock_path = home.join(LOCK_FILE);
        let lock = tokio::task::spawn_blocking(move || FileLock::acquire(&lock_path))
            .await
            .map_err(|e| StoreError::IoAt {
                action: "cannot lock",
                path: home.join(LOCK_FILE),
                source: std::io::Error::other(e.to_string()),
            })??;
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Db {
                action: format!("cannot open database {}", path.display()),
                source,
            })?;
        // WAL is a property of the file: set once, under the lock.
        sqlx::raw_sql("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await
            .map_err(|source| StoreError::Db {
                action: format!("cannot open database {}", path.display()),
                source,
            })?;
        make_private(&path)?;
        let migrated = SQLITE_MIGRATIONS.run(&pool).await;
        drop(lock);
        migrated.map_err(|source| StoreError::Migrate {
            path: path.clone(),
            source,
        })?;
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
            home: home.to_path_buf(),
            key: Arc::new(OnceLock::new()),
        })
    }

    /// Open the PostgreSQL database at `url` (`postgres://USER:PASSWORD@HOST:PORT/DB`) and apply
    /// pending migrations (Postgres serializes concurrent migrators itself, with an advisory
    /// lock). `home` still holds what is not in the database: the secret key and the files.
    /// Several servers may open one database at once; each passes the same `home` contents
    /// (a shared volume) so every server reads the same key and folders.
    pub async fn open_postgres(home: &Path, url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        fsutil::ensure_private_dir(home)?;
        let shown = redact_url(url);
        let options: AnyConnectOptions = url.parse().map_err(|source| StoreError::Db {
            action: format!("cannot open database {shown}"),
            source,
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(PG_MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Db {
                action: format!("cannot open database {shown}"),
                source,
            })?;
        POSTGRES_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: PathBuf::from(shown),
                source,
            })?;
        Ok(Store {
            pool,
            backend: Backend::Postgres,
            home: home.to_path_buf(),
            key: Arc::new(OnceLock::new()),
        })
    }

    /// Open the store a server names: `postgres://…` (or `postgresql://…`) for PostgreSQL,
    /// else SQLite under `home`.
    pub async fn open_database(home: &Path, database: Option<&str>) -> Result<Store, StoreError> {
        match database {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Store::open_postgres(home, url).await
            }
            Some(other) => Err(StoreError::UnknownDatabase {
                given: redact_url(other),
            }),
            None => Store::open(home).await,
        }
    }

    /// Which database this store is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The home directory the database lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Close every connection (waits for queries in flight).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- users ----

    /// Create a user with a fresh bearer token; returns the user and the token in plain text,
    /// which is not stored anywhere (only its sha256 is).
    pub async fn create_user(&self, name: &str, role: Role) -> Result<(User, String), StoreError> {
        self.create_user_as(name, role, false).await
    }

    /// [`Store::create_user`], for a person or (`service`) a service principal.
    pub async fn create_user_as(
        &self,
        name: &str,
        role: Role,
        service: bool,
    ) -> Result<(User, String), StoreError> {
        let token = new_token()?;
        let user = User {
            id: format!("u-{}", hex::encode(random_bytes::<6>()?)),
            name: name.to_string(),
            role,
            extra_roles: Vec::new(),
            disabled: false,
            service,
            created: now_ms(),
        };
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot create a user"))?;
        sqlx::query(
            "INSERT INTO users (id, name, role, token_sha256, service, created)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(role.as_str())
        .bind(token_hash(&token))
        .bind(service)
        .bind(user.created)
        .execute(&mut *tx)
        .await
        .map_err(|e| exists_or(e, "user", name, || format!("cannot create user `{name}`")))?;
        insert_token(&mut tx, &user.id, &token, user.created, None).await?;
        tx.commit().await.map_err(db("cannot create a user"))?;
        Ok((user, token))
    }

    /// Create the owner (named [`OWNER_NAME`]) if no owner exists yet and return its token; `None`
    /// when an owner already exists. Safe to call concurrently: exactly one caller gets a token.
    pub async fn ensure_owner(&self) -> Result<Option<String>, StoreError> {
        let token = new_token()?;
        let id = format!("u-{}", hex::encode(random_bytes::<6>()?));
        let created = now_ms();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot create the owner"))?;
        let done = sqlx::query(
            "INSERT INTO users (id, name, role, token_sha256, created)
             SELECT $1, $2, 'owner', $3, $4
             WHERE NOT EXISTS (SELECT 1 FROM users WHERE role = 'owner')",
        )
        .bind(&id)
        .bind(OWNER_NAME)
        .bind(token_hash(&token))
        .bind(created)
        .execute(&mut *tx)
        .await;
        let done = match done {
            // Another server created it at the same moment (Postgres reads before either
            // commits): it exists, which is all this asks.
            Err(e) if is_unique_violation(&e) => return Ok(None),
            done => done.map_err(db("cannot create the owner"))?,
        };
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        insert_token(&mut tx, &id, &token, created, None).await?;
        tx.commit().await.map_err(db("cannot create the owner"))?;
        Ok(Some(token))
    }

    /// The user a bearer token belongs to, if the token is live (not revoked, not expired) and
    /// its user is not disabled.
    pub async fn user_by_token(&self, token: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.sha256 = $1 AND t.revoked IS NULL AND (t.expires IS NULL OR t.expires > $2)
               AND NOT u.disabled",
            user_columns(self.backend)
        ))
        .bind(token_hash(token))
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot look up a token"))?;
        row.map(|r| user_from(&r)).transpose()
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM users u ORDER BY u.name",
            user_columns(self.backend)
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list users"))?;
        rows.iter().map(user_from).collect()
    }

    /// Disable (or enable again) user `id`: a disabled user's tokens are refused.
    pub async fn set_user_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2 AND role != 'owner'")
            .bind(disabled)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("cannot disable a user"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Replace user `id`'s own role (never the owner's, nor to owner).
    pub async fn set_user_role(&self, id: &str, role: Role) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET role = $1 WHERE id = $2 AND role != 'owner'")
            .bind(role.as_str())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("cannot assign a role"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Let user `id` hold `role` besides its own (granting twice is no error).
    pub async fn add_role(&self, id: &str, role: Role) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO role_assignments (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(role.as_str())
        .execute(&self.pool)
        .await
        .map_err(db("cannot assign a role"))?;
        Ok(())
    }

    /// Take an extra role from user `id`; whether it held it.
    pub async fn remove_role(&self, id: &str, role: Role) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM role_assignments WHERE user_id = $1 AND role = $2")
            .bind(id)
            .bind(role.as_str())
            .execute(&self.pool)
            .await
            .map_err(db("cannot remove a role"))?;
        Ok(done.rows_affected() == 1)
    }

    // ---- workspace connections ----

    /// Record (or update) that `owner` has connection `name`, shared or not.
    pub async fn put_connection(
        &self,
        owner: &str,
        name: &str,
        kind: &str,
        shared: bool,
    ) -> Result<ConnectionRecord, StoreError> {
        sqlx::query(
            "INSERT INTO connections (owner, name, kind, shared, created, updated) VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (owner, name) DO UPDATE SET kind = excluded.kind, shared = excluded.shared, updated = excluded.updated",
        )
        .bind(owner)
        .bind(name)
        .bind(kind)
        .bind(shared)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot record connection `{name}`")))?;
        self.list_connections()
            .await?
            .into_iter()
            .find(|c| c.owner == owner && c.name == name)
            .ok_or_else(|| StoreError::NotFound {
                what: "connection",
                name: name.to_string(),
            })
    }

    /// Every workspace connection, oldest first.
    pub async fn list_connections(&self) -> Result<Vec<ConnectionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT owner, name, kind, shared, created FROM connections ORDER BY created, name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list connections"))?;
        rows.iter()
            .map(|r| {
                Ok(ConnectionRecord {
                    owner: get(r, "owner")?,
                    name: get(r, "name")?,
                    kind: get(r, "kind")?,
                    shared: get_bool(r, "shared")?,
                    created: get(r, "created")?,
                })
            })
            .collect()
    }

    /// Forget `owner`'s connection `name`; whether there was one.
    pub async fn delete_connection(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM connections WHERE owner = $1 AND name = $2")
            .bind(owner)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot delete connection `{name}`")))?;
        Ok(done.rows_affected() == 1)
    }

    // ---- tokens ----

    /// A new token for user `user_id`, refused after `expires` (Unix ms) when given. Returns
    /// its record and the token in plain text, which is kept nowhere (only its sha256 is).
    pub async fn create_token(
        &self,
        user_id: &str,
        expires: Option<i64>,
    ) -> Result<(TokenRecord, String), StoreError> {
        let token = new_token()?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot create a token"))?;
        let id = insert_token(&mut tx, user_id, &token, now_ms(), expires).await?;
        tx.commit().await.map_err(db("cannot create a token"))?;
        let record = self
            .get_token(&id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "token",
                name: id.clone(),
            })?;
        Ok((record, token))
    }

    pub async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT t.id, t.user_id, u.name AS user, t.created, t.expires, t.revoked
             FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read a token"))?;
        row.map(|r| token_from(&r)).transpose()
    }

    /// The tokens of user `user_id` (every user's when `None`), oldest first.
    pub async fn list_tokens(&self, user_id: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, t.user_id, u.name AS user, t.created, t.expires, t.revoked
             FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE $1 IS NULL OR t.user_id = $2 ORDER BY t.created, t.id",
        )
        .bind(user_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list tokens"))?;
        rows.iter().map(token_from).collect()
    }

    /// Revoke token `id`: its next request gets 401. Whether it was live.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_tokens SET revoked = $1 WHERE id = $2 AND revoked IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db("cannot revoke a token"))?;
        Ok(done.rows_affected() == 1)
    }

    // ---- audit ----

    /// Record one state-changing request.
    pub async fn record_audit(
        &self,
        user: Option<&User>,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (at, user_id, \"user\", method, path, status) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now_ms())
        .bind(user.map(|u| u.id.as_str()))
        .bind(user.map(|u| u.name.as_str()))
        .bind(method)
        .bind(path)
        .bind(i64::from(status))
        .execute(&self.pool)
        .await
        .map_err(db("cannot write the audit log"))?;
        Ok(())
    }

    /// The newest `limit` audit entries before sequence number `before` (all when `None`),
    /// newest first.
    pub async fn list_audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, user_id, \"user\", method, path, status FROM audit
             WHERE $1 IS NULL OR seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(before)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot read the audit log"))?;
        rows.iter()
            .map(|r| {
                let status: i64 = get(r, "status")?;
                Ok(AuditEntry {
                    seq: get(r, "seq")?,
                    at: get(r, "at")?,
                    user_id: get(r, "user_id")?,
                    user: get(r, "user")?,
                    method: get(r, "method")?,
                    path: get(r, "path")?,
                    status: u16::try_from(status).unwrap_or(0),
                })
            })
            .collect()
    }

    // ---- computes ----

    /// Create a compute (status `Running`), assigned to `owner` (a user id).
    pub async fn create_compute(
        &self,
        name: &str,
        kind: ComputeKind,
        size: SessionSize,
        owner: &str,
    ) -> Result<Compute, StoreError> {
        let compute = Compute {
            name: name.to_string(),
            kind,
            size,
            owner: owner.to_string(),
            status: ComputeStatus::Running,
            created: now_ms(),
        };
        sqlx::query(
            "INSERT INTO computes (name, kind, size, owner, status, created) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&compute.name)
        .bind(enc(&compute.kind))
        .bind(enc(&compute.size))
        .bind(&compute.owner)
        .bind(enc(&compute.status))
        .bind(compute.created)
        .execute(&self.pool)
        .await
        .map_err(|e| exists_or(e, "compute", name, || format!("cannot create compute `{name}`")))?;
        Ok(compute)
    }

    /// User `owner`'s compute `name` (names are each user's own).
    pub async fn get_compute(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<Compute>, StoreError> {
        let row = sqlx::query(
            "SELECT name, kind, size, owner, status, created FROM computes
             WHERE owner = $1 AND name = $2",
        )
        .bind(owner)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(format!("cannot read compute `{name}`")))?;
        row.map(|r| compute_from(&r)).transpose()
    }

    /// Every compute, by name.
    pub async fn list_computes(&self) -> Result<Vec<Compute>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, kind, size, owner, status, created FROM computes ORDER BY name, owner",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list computes"))?;
        rows.iter().map(compute_from).collect()
    }

    /// Start or stop a compute; `false` when there is none.
    pub async fn set_compute_status(
        &self,
        owner: &str,
        name: &str,
        status: ComputeStatus,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE computes SET status = $1 WHERE owner = $2 AND name = $3")
            .bind(enc(&status))
            .bind(owner)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot update compute `{name}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Delete a compute; `false` when there was none.
    pub async fn delete_compute(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM computes WHERE owner = $1 AND name = $2")
            .bind(owner)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot delete compute `{name}`")))?;
        Ok(done.rows_affected() == 1)
    }

    // ---- sessions ----

    /// Insert a new session with a fresh `s-<12 hex>` id, status `NotAvailable`.
    pub async fn insert_session(&self, new: &NewSession) -> Result<Session, StoreError> {
        let now = now_ms();
        let session = Session {
            id: format!("s-{}", hex::encode(random_bytes::<6>()?)),
            owner: new.owner.clone(),
            flow_dir: new.flow_dir.clone(),
            flow_ref: new.flow_ref.clone(),
            env_ref: new.env_ref.clone(),
            env_key: new.env_key.clone(),
            base_version: new.base_version.clone(),
            size: new.size,
            idle_timeout_s: new.idle_timeout_s,
            identity: new.identity.clone(),
            compute: new.compute.clone(),
            shared: new.shared,
            status: SessionStatus::NotAvailable,
            phase: None,
            reason: None,
            log_tail: None,
            agent_pid: None,
            agent_addr: None,
            created: now,
            last_activity: now,
            updated: now,
            manager: None,
            manager_lease: None,
        };
        sqlx::query(
            "INSERT INTO sessions (id, owner, flow_dir, flow_ref, env_ref, env_key, base_version,
                 size, idle_timeout_s, identity, compute, shared, status, created, last_activity,
                 updated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&session.id)
        .bind(&session.owner)
        .bind(&session.flow_dir)
        .bind(&session.flow_ref)
        .bind(&session.env_ref)
        .bind(&session.env_key)
        .bind(&session.base_version)
        .bind(enc(&session.size))
        .bind(to_i64(session.idle_timeout_s))
        .bind(&session.identity)
        .bind(&session.compute)
        .bind(session.shared)
        .bind(enc(&session.status))
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db("cannot create a session"))?;
        Ok(session)
    }

    /// The session `id`.
    pub async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(&format!("{SESSION_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot read session `{id}`")))?;
        row.map(|r| session_from(&r)).transpose()
    }

    /// Sessions of `owner` (a user id), or every session when `None`; oldest first.
    pub async fn list_sessions(&self, owner: Option<&str>) -> Result<Vec<Session>, StoreError> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query(&format!(
                    "{SESSION_SELECT} WHERE owner = $1 ORDER BY created, id"
                ))
                .bind(owner)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!("{SESSION_SELECT} ORDER BY created, id"))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(db("cannot list sessions"))?;
        rows.iter().map(session_from).collect()
    }

    /// Set a session's status, phase and reason (all three replaced); `false` when there is none.
    pub async fn update_session_status(
        &self,
        id: &str,
        status: SessionStatus,
        phase: Option<PreparingPhase>,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET status = $1, phase = $2, reason = $3, updated = $4 WHERE id = $5",
        )
        .bind(enc(&status))
        .bind(phase.map(|p| enc(&p)))
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot update session `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Keep the last lines of a session's log (for `Failed` sessions).
    pub async fn set_session_log_tail(
        &self,
        id: &str,
        log_tail: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE sessions SET log_tail = $1, updated = $2 WHERE id = $3")
            .bind(log_tail)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot update session `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Record (or clear) a session's agent process and address.
    pub async fn update_session_agent(
        &self,
        id: &str,
        agent_pid: Option<u32>,
        agent_addr: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET agent_pid = $1, agent_addr = $2, updated = $3 WHERE id = $4",
        )
        .bind(agent_pid.map(i64::from))
        .bind(agent_addr)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot update session `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Keep (or, `None`, forget) the bearer token of session `id`'s agent, sealed.
    pub async fn set_agent_token(&self, id: &str, token: Option<&str>) -> Result<(), StoreError> {
        let sealed = match token {
            Some(t) => Some(self.key()?.seal(&agent_aad(id), "agent_token", t)?),
            None => None,
        };
        sqlx::query("UPDATE sessions SET agent_token_sealed = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot update session `{id}`")))?;
        Ok(())
    }

    /// The bearer token of session `id`'s agent, if the server keeps one.
    pub async fn agent_token(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT agent_token_sealed FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot read session `{id}`")))?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Option<String> = get(&row, "agent_token_sealed")?;
        match sealed {
            None => Ok(None),
            Some(sealed) => self
                .key()?
                .open(&agent_aad(id), "agent_token", &sealed)
                .map(Some)
                .map_err(|_| StoreError::BadValue {
                    table: "sessions",
                    column: "agent_token_sealed",
                    value: "(sealed)".into(),
                }),
        }
    }

    /// Change a session's size and idle timeout (`session edit`).
    pub async fn update_session_settings(
        &self,
        id: &str,
        size: SessionSize,
        idle_timeout_s: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET size = $1, idle_timeout_s = $2, updated = $3 WHERE id = $4",
        )
        .bind(enc(&size))
        .bind(to_i64(idle_timeout_s))
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot update session `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Point a session at another environment (`session update`, `install`).
    pub async fn update_session_env(
        &self,
        id: &str,
        env_ref: &str,
        env_key: Option<&str>,
        base_version: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET env_ref = $1, env_key = $2, base_version = $3, updated = $4 WHERE id = $5",
        )
        .bind(env_ref)
        .bind(env_key)
        .bind(base_version)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot update session `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Point a session at another flow version (`session install` saves requirements as one).
    pub async fn update_session_flow(
        &self,
        id: &str,
        flow_dir: &str,
        flow_ref: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET flow_dir = $1, flow_ref = $2, updated = $3 WHERE id = $4",
        )
        .bind(flow_dir)
        .bind(flow_ref)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot update session `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    // ---- flows ----

    /// Record a pushed snapshot as the next version of `name`, unless the latest version already
    /// is this snapshot: then that version is returned and `false` says nothing changed.
    pub async fn push_flow(
        &self,
        name: &str,
        owner: &str,
        hash: &str,
        entry: Option<&str>,
        files: u64,
        bytes: u64,
    ) -> Result<(FlowRecord, bool), StoreError> {
        let saved = self
            .save_flow(&NewFlowVersion {
                name,
                owner,
                hash,
                entry,
                files,
                bytes,
                message: None,
                expect_latest: None,
            })
            .await?;
        match saved {
            FlowSaved::Created(r) => Ok((r, true)),
            FlowSaved::Unchanged(r) => Ok((r, false)),
            FlowSaved::Stale(_) => Err(StoreError::BadValue {
                table: "flows",
                column: "version",
                value: "stale without an expected version".into(),
            }),
        }
    }

    /// Record the next version of a flow: nothing when the latest version already holds these
    /// files, and, with `expect_latest`, only if no other version was saved since that one (the
    /// check and the insert are one statement, so two saves from one version cannot both win).
    pub async fn save_flow(&self, new: &NewFlowVersion<'_>) -> Result<FlowSaved, StoreError> {
        let name = new.name;
        let latest = self.get_flow(name, None).await?;
        let latest_version = latest.as_ref().map_or(0, |l| l.version);
        if new.expect_latest.is_some_and(|v| v != latest_version) {
            return Ok(FlowSaved::Stale(latest));
        }
        if let Some(latest) = latest {
            if latest.hash == new.hash && latest.entry.as_deref() == new.entry {
                return Ok(FlowSaved::Unchanged(latest));
            }
        }
        let expect = new.expect_latest.map(i64::from).unwrap_or(-1);
        let row = next_version(|| {
            sqlx::query(
                "INSERT INTO flows (name, version, hash, entry, owner, files, bytes, created, message)
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8 FROM flows WHERE name = $9
                 HAVING $10 < 0 OR COALESCE(MAX(version), 0) = $11
                 RETURNING version",
            )
            .bind(name)
            .bind(new.hash)
            .bind(new.entry)
            .bind(new.owner)
            .bind(to_i64(new.files))
            .bind(to_i64(new.bytes))
            .bind(now_ms())
            .bind(new.message)
            .bind(name)
            .bind(expect)
            .bind(expect)
            .fetch_optional(&self.pool)
        })
        .await
        .map_err(db(format!("cannot record flow `{name}`")))?;
        let Some(row) = row else {
            return Ok(FlowSaved::Stale(self.get_flow(name, None).await?));
        };
        let version: i64 = row
            .try_get("version")
            .map_err(db(format!("cannot record flow `{name}`")))?;
        let version = u32::try_from(version).map_err(|_| StoreError::BadValue {
            table: "flows",
            column: "version",
            value: version.to_string(),
        })?;
        let rec =
            self.get_flow(name, Some(version))
                .await?
                .ok_or_else(|| StoreError::BadValue {
                    table: "flows",
                    column: "version",
                    value: version.to_string(),
                })?;
        Ok(FlowSaved::Created(rec))
    }

    /// `name@v<version>`, or the latest version of `name` when `version` is `None`.
    pub async fn get_flow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<FlowRecord>, StoreError> {
        let by_version = format!("{FLOW_SELECT} WHERE name = $1 AND version = $2");
        let latest = format!("{FLOW_SELECT} WHERE name = $1 ORDER BY version DESC LIMIT 1");
        let query = match version {
            Some(v) => sqlx::query(&by_version).bind(name).bind(i64::from(v)),
            None => sqlx::query(&latest).bind(name),
        };
        let row = query
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot read flow `{name}`")))?;
        row.map(|r| flow_from(&r)).transpose()
    }

    /// Every version of every flow, by name then version.
    pub async fn list_flows(&self) -> Result<Vec<FlowRecord>, StoreError> {
        let rows = sqlx::query(&format!("{FLOW_SELECT} ORDER BY name, version"))
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot list flows"))?;
        rows.iter().map(flow_from).collect()
    }

    /// Mark activity now (a run started or finished), resetting the idle clock.
    pub async fn touch_session(&self, id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let done =
            sqlx::query("UPDATE sessions SET last_activity = $1, updated = $2 WHERE id = $3")
                .bind(now)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db(format!("cannot update session `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Delete a session; `false` when there was none. Its runs stay.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot delete session `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    // ---- environments ----

    /// Publish `name@vN` (N = the next version of `name`, from 1); returns N.
    pub async fn publish_environment(
        &self,
        name: &str,
        owner: Option<&str>,
        base_version: &str,
        requirements: &str,
    ) -> Result<u32, StoreError> {
        let row = next_version(|| {
            sqlx::query(
                "INSERT INTO environments (name, version, owner, base_version, requirements, created)
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM environments WHERE name = $6
                 RETURNING version",
            )
            .bind(name)
            .bind(owner)
            .bind(base_version)
            .bind(requirements)
            .bind(now_ms())
            .bind(name)
            .fetch_one(&self.pool)
        })
        .await
        .map_err(db(format!("cannot publish environment `{name}`")))?;
        let version: i64 = row
            .try_get("version")
            .map_err(db(format!("cannot publish environment `{name}`")))?;
        u32::try_from(version).map_err(|_| StoreError::BadValue {
            table: "environments",
            column: "version",
            value: version.to_string(),
        })
    }

    /// `name@v<version>`, or the latest version of `name` when `version` is `None`.
    pub async fn get_environment(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<EnvironmentRecord>, StoreError> {
        let query = match version {
            Some(v) => sqlx::query(
                "SELECT name, version, owner, base_version, requirements, created FROM environments
                 WHERE name = $1 AND version = $2",
            )
            .bind(name)
            .bind(i64::from(v)),
            None => sqlx::query(
                "SELECT name, version, owner, base_version, requirements, created FROM environments
                 WHERE name = $1 ORDER BY version DESC LIMIT 1",
            )
            .bind(name),
        };
        let row = query
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot read environment `{name}`")))?;
        row.map(|r| environment_from(&r)).transpose()
    }

    /// Every version of every custom environment, by name then version.
    pub async fn list_environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, owner, base_version, requirements, created FROM environments
             ORDER BY name, version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list environments"))?;
        rows.iter().map(environment_from).collect()
    }

    // ---- identities ----

    /// Create an identity owned by `owner` (a user id), its feed token sealed at rest.
    pub async fn create_identity(
        &self,
        name: &str,
        owner: &str,
        feed_token: Option<&str>,
        feed_hosts: &[String],
        entra: Option<&flowrt_api::EntraServicePrincipal>,
    ) -> Result<Identity, StoreError> {
        let entra_sealed = entra
            .map(|p| self.seal_identity_secret(name, "entra_client_secret", &p.client_secret))
            .transpose()?;
        let sealed = feed_token
            .map(|token| self.seal_identity_secret(name, "feed_token", token))
            .transpose()?;
        let identity = Identity {
            name: name.to_string(),
            owner: owner.to_string(),
            feed_token: feed_token.map(|_| MASK.to_string()),
            feed_hosts: feed_hosts.to_vec(),
            entra_client_id: entra.map(|p| p.client_id.clone()),
            granted: Vec::new(),
            created: now_ms(),
        };
        let hosts = serde_json::to_string(feed_hosts).map_err(|e| StoreError::BadValue {
            table: "identities",
            column: "feed_hosts",
            value: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO identities (name, owner, feed_token_sealed, feed_hosts, created,
                                     entra_tenant_id, entra_client_id, entra_secret_sealed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(name)
        .bind(owner)
        .bind(sealed)
        .bind(hosts)
        .bind(identity.created)
        .bind(entra.map(|p| p.tenant_id.clone()))
        .bind(entra.map(|p| p.client_id.clone()))
        .bind(entra_sealed)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            exists_or(e, "identity", name, || {
                format!("cannot create identity `{name}`")
            })
        })?;
        Ok(identity)
    }

    /// Every identity, by name, feed tokens masked.
    pub async fn list_identities(&self) -> Result<Vec<Identity>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT name, owner, feed_token_sealed, feed_hosts, created, entra_client_id,
                    (SELECT {} FROM identity_grants g
                     WHERE g.identity = identities.name) AS granted
             FROM identities ORDER BY name",
            json_list(self.backend, "user_id")
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list identities"))?;
        let list = |r: &AnyRow, column: &'static str| -> Result<Vec<String>, StoreError> {
            let text: Option<String> = get(r, column)?;
            match text {
                None => Ok(Vec::new()),
                Some(t) => serde_json::from_str(&t).map_err(|_| StoreError::BadValue {
                    table: "identities",
                    column,
                    value: t,
                }),
            }
        };
        rows.iter()
            .map(|r| {
                let sealed: Option<String> = get(r, "feed_token_sealed")?;
                Ok(Identity {
                    name: get(r, "name")?,
                    owner: get(r, "owner")?,
                    feed_token: sealed.map(|_| MASK.to_string()),
                    feed_hosts: list(r, "feed_hosts")?,
                    entra_client_id: get(r, "entra_client_id")?,
                    granted: list(r, "granted")?,
                    created: get(r, "created")?,
                })
            })
            .collect()
    }

    /// Let `user_id` start sessions acting as identity `name` (granting twice is no error).
    pub async fn grant_identity(&self, name: &str, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO identity_grants (identity, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot grant identity `{name}`")))?;
        Ok(())
    }

    /// The plain feed token of identity `name`, for substituting `{private}` in index URLs while
    /// installing an environment — and for nothing else: never log, store or return it to a client.
    /// `Ok(None)` when the identity has no token; an error when there is no such identity.
    pub async fn identity_feed_token_for_install(
        &self,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = self.identity_row(name, "feed_token_sealed").await?;
        let sealed: Option<String> = get(&row, "feed_token_sealed")?;
        sealed
            .map(|sealed| self.open_identity_secret(name, "feed_token", &sealed))
            .transpose()
    }

    /// The Entra ID service principal of identity `name`, its secret opened, for handing to the
    /// agent of a session acting as it — and for nothing else: never log, store or return it to
    /// a client. `Ok(None)` when the identity has none; an error when there is no such identity.
    pub async fn identity_entra_for_session(
        &self,
        name: &str,
    ) -> Result<Option<flowrt_api::EntraServicePrincipal>, StoreError> {
        let row = self
            .identity_row(
                name,
                "entra_tenant_id, entra_client_id, entra_secret_sealed",
            )
            .await?;
        let tenant: Option<String> = get(&row, "entra_tenant_id")?;
        let client: Option<String> = get(&row, "entra_client_id")?;
        let sealed: Option<String> = get(&row, "entra_secret_sealed")?;
        let (Some(tenant_id), Some(client_id), Some(sealed)) = (tenant, client, sealed) else {
            return Ok(None);
        };
        Ok(Some(flowrt_api::EntraServicePrincipal {
            tenant_id,
            client_id,
            client_secret: self.open_identity_secret(name, "entra_client_secret", &sealed)?,
        }))
    }

    /// `columns` (this module's constants, never a caller's text) of identity `name`'s row;
    /// `NotFound` when there is no such identity.
    async fn identity_row(&self, name: &str, columns: &str) -> Result<AnyRow, StoreError> {
        sqlx::query(&format!("SELECT {columns} FROM identities WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot read identity `{name}`")))?
            .ok_or_else(|| StoreError::NotFound {
                what: "identity",
                name: name.to_string(),
            })
    }

    /// An identity's secret `field`, sealed with the store's key and bound to the identity.
    fn seal_identity_secret(
        &self,
        name: &str,
        field: &str,
        plain: &str,
    ) -> Result<String, StoreError> {
        self.key()?
            .seal(&identity_aad(name), field, plain)
            .map_err(|_| StoreError::IdentitySecret {
                name: name.to_string(),
            })
    }

    /// An identity's secret `field`, opened.
    fn open_identity_secret(
        &self,
        name: &str,
        field: &str,
        sealed: &str,
    ) -> Result<String, StoreError> {
        self.key()?
            .open(&identity_aad(name), field, sealed)
            .map_err(|_| StoreError::IdentitySecret {
                name: name.to_string(),
            })
    }

    // ---- runs ----

    /// Record a run `id` sent to `session_id`, status `Queued`.
    pub async fn insert_run(
        &self,
        id: &str,
        session_id: &str,
        kind: RunKind,
        request: &Value,
    ) -> Result<RunRecord, StoreError> {
        let run = RunRecord {
            id: id.to_string(),
            session_id: session_id.to_string(),
            kind,
            status: RunStatus::Queued,
            request: request.clone(),
            result: None,
            created: now_ms(),
            finished: None,
        };
        sqlx::query(
            "INSERT INTO runs (id, session_id, kind, status, request, created) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(session_id)
        .bind(enc(&kind))
        .bind(enc(&run.status))
        .bind(request.to_string())
        .bind(run.created)
        .execute(&self.pool)
        .await
        .map_err(|e| exists_or(e, "run", id, || format!("cannot record run `{id}`")))?;
        Ok(run)
    }

    /// Set a run's status (and result); a finished status stamps `finished`.
    pub async fn update_run(
        &self,
        id: &str,
        status: RunStatus,
        result: Option<&Value>,
    ) -> Result<bool, StoreError> {
        let finished = status.is_finished().then(now_ms);
        let done = sqlx::query(
            "UPDATE runs SET status = $1, result = COALESCE($2, result), finished = $3 WHERE id = $4",
        )
        .bind(enc(&status))
        .bind(result.map(Value::to_string))
        .bind(finished)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot update run `{id}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// The run `id`.
    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(&format!("{RUN_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot read run `{id}`")))?;
        row.map(|r| run_from(&r)).transpose()
    }

    /// The runs of a session, oldest first.
    pub async fn list_runs(&self, session_id: &str) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{RUN_SELECT} WHERE session_id = $1 ORDER BY created, id"
        ))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db(format!("cannot list runs of session `{session_id}`")))?;
        rows.iter().map(run_from).collect()
    }

    /// Every run not finished yet (`Queued` or `Running`), oldest first: what a restarted server
    /// re-queues.
    pub async fn list_unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{RUN_SELECT} WHERE finished IS NULL ORDER BY created, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list unfinished runs"))?;
        rows.iter().map(run_from).collect()
    }

    fn key(&self) -> Result<&SecretKey, StoreError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let key = crate::secret::load_key(&self.home)?;
        Ok(self.key.get_or_init(|| key))
    }
}

const SESSION_SELECT: &str =
    "SELECT id, owner, flow_dir, flow_ref, env_ref, env_key, base_version, size,
    idle_timeout_s, identity, compute, shared, status, phase, reason, log_tail, agent_pid,
    agent_addr, created, last_activity, updated, manager, manager_lease FROM sessions";

const RUN_SELECT: &str =
    "SELECT id, session_id, kind, status, request, result, created, finished FROM runs";

/// Associated data for identity secrets. `:` cannot occur in a connection name, so an identity's
/// sealed token never opens as a connection secret or the other way round.
fn identity_aad(name: &str) -> String {
    format!("identity:{name}")
}

/// Associated data for an agent's token: a sealed token opens only as its own session's.
fn agent_aad(session: &str) -> String {
    format!("agent:{session}")
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(bytes)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An enum's serde name (`Running`, `small`, `owner`).
fn enc<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn dec<T: DeserializeOwned>(
    table: &'static str,
    column: &'static str,
    s: String,
) -> Result<T, StoreError> {
    serde_json::from_value(Value::String(s.clone())).map_err(|_| StoreError::BadValue {
        table,
        column,
        value: s,
    })
}

pub(crate) fn db(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let action = action.into();
    move |source| {
        if is_nul_in_text(&source) {
            StoreError::NulInText { action }
        } else {
            StoreError::Db { action, source }
        }
    }
}

/// Postgres refuses a NUL in text (SQLite keeps it): that is bad input, not a failing store.
fn is_nul_in_text(e: &sqlx::Error) -> bool {
    // 22021: character_not_in_repertoire ("invalid byte sequence for encoding UTF8: 0x00").
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "22021")
}

/// How often numbering a new version is retried when another writer took that number first.
const VERSION_RETRIES: u32 = 20;

/// Run `insert` (which numbers a new version `MAX + 1`) until it does not collide: two servers on
/// Postgres may number the same version at once, and the loser tries again.
async fn next_version<F, Fut, R>(mut insert: F) -> Result<R, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<R, sqlx::Error>>,
{
    let mut attempt = 0;
    loop {
        match insert().await {
            Err(e) if is_unique_violation(&e) && attempt < VERSION_RETRIES => attempt += 1,
            done => return done,
        }
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// A unique-constraint violation becomes [`StoreError::Exists`]; anything else a `Db` error.
pub(crate) fn exists_or(
    e: sqlx::Error,
    what: &'static str,
    name: &str,
    action: impl FnOnce() -> String,
) -> StoreError {
    let unique = e
        .as_database_error()
        .is_some_and(|d| d.is_unique_violation());
    if unique {
        StoreError::Exists {
            what,
            name: name.to_string(),
        }
    } else if is_nul_in_text(&e) {
        StoreError::NulInText { action: action() }
    } else {
        StoreError::Db {
            action: action(),
            source: e,
        }
    }
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).map_err(|source| StoreError::Db {
        action: format!("cannot read column {column}"),
        source,
    })
}

/// The aggregate that collects `expr` over a subquery's rows as a JSON list (text; `[]` for none).
fn json_list(backend: Backend, expr: &str) -> String {
    match backend {
        Backend::Sqlite => format!("json_group_array({expr})"),
        Backend::Postgres => format!("COALESCE(json_agg({expr}), '[]'::json)::text"),
    }
}

/// The columns `user_from` reads, from `users u`: its extra roles come as a JSON list.
fn user_columns(backend: Backend) -> String {
    format!(
        "u.id, u.name, u.role, u.disabled, u.service, u.created,
        (SELECT {} FROM role_assignments a WHERE a.user_id = u.id) AS extra_roles",
        json_list(backend, "role")
    )
}

/// A boolean column: SQLite keeps 0 and 1 (read as integers), Postgres a `boolean`.
fn get_bool(row: &AnyRow, column: &'static str) -> Result<bool, StoreError> {
    match row.try_get::<bool, _>(column) {
        Ok(b) => Ok(b),
        Err(_) => get::<i64>(row, column).map(|v| v != 0),
    }
}

/// `url` without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn user_from(r: &AnyRow) -> Result<User, StoreError> {
    let extra: String = get(r, "extra_roles")?;
    let extra: Vec<String> = serde_json::from_str(&extra).map_err(|_| StoreError::BadValue {
        table: "role_assignments",
        column: "role",
        value: extra.clone(),
    })?;
    let role: String = get(r, "role")?;
    let parse = |table: &'static str, column: &'static str, text: &str| {
        Role::parse(text).ok_or_else(|| StoreError::BadValue {
            table,
            column,
            value: text.to_string(),
        })
    };
    Ok(User {
        id: get(r, "id")?,
        name: get(r, "name")?,
        role: parse("users", "role", &role)?,
        extra_roles: extra
            .iter()
            .map(|t| parse("role_assignments", "role", t))
            .collect::<Result<_, _>>()?,
        disabled: get_bool(r, "disabled")?,
        service: get_bool(r, "service")?,
        created: get(r, "created")?,
    })
}

fn token_from(r: &AnyRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: get(r, "id")?,
        user_id: get(r, "user_id")?,
        user: get(r, "user")?,
        created: get(r, "created")?,
        expires: get(r, "expires")?,
        revoked: get(r, "revoked")?,
    })
}

/// A fresh bearer token: the prefix (so scanners recognise leaked ones) and 32 random bytes.
fn new_token() -> Result<String, StoreError> {
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        hex::encode(random_bytes::<32>()?)
    ))
}

/// Keep `token`'s hash for `user_id`; returns the token's id.
async fn insert_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    token: &str,
    created: i64,
    expires: Option<i64>,
) -> Result<String, StoreError> {
    let id = format!("t-{}", hex::encode(random_bytes::<6>()?));
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, sha256, created, expires) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(token_hash(token))
    .bind(created)
    .bind(expires)
    .execute(&mut **tx)
    .await
    .map_err(db("cannot store a token"))?;
    Ok(id)
}

fn compute_from(r: &AnyRow) -> Result<Compute, StoreError> {
    Ok(Compute {
        name: get(r, "name")?,
        kind: dec("computes", "kind", get(r, "kind")?)?,
        size: dec("computes", "size", get(r, "size")?)?,
        owner: get(r, "owner")?,
        status: dec("computes", "status", get(r, "status")?)?,
        created: get(r, "created")?,
    })
}

fn session_from(r: &AnyRow) -> Result<Session, StoreError> {
    let phase: Option<String> = get(r, "phase")?;
    let pid: Option<i64> = get(r, "agent_pid")?;
    let idle: i64 = get(r, "idle_timeout_s")?;
    Ok(Session {
        id: get(r, "id")?,
        owner: get(r, "owner")?,
        flow_dir: get(r, "flow_dir")?,
        flow_ref: get(r, "flow_ref")?,
        env_ref: get(r, "env_ref")?,
        env_key: get(r, "env_key")?,
        base_version: get(r, "base_version")?,
        size: dec("sessions", "size", get(r, "size")?)?,
        idle_timeout_s: u64::try_from(idle).unwrap_or(0),
        identity: get(r, "identity")?,
        compute: get(r, "compute")?,
        shared: get_bool(r, "shared")?,
        status: dec("sessions", "status", get(r, "status")?)?,
        phase: phase.map(|p| dec("sessions", "phase", p)).transpose()?,
        reason: get(r, "reason")?,
        log_tail: get(r, "log_tail")?,
        agent_pid: pid.and_then(|p| u32::try_from(p).ok()),
        agent_addr: get(r, "agent_addr")?,
        created: get(r, "created")?,
        last_activity: get(r, "last_activity")?,
        updated: get(r, "updated")?,
        manager: get(r, "manager")?,
        manager_lease: get(r, "manager_lease")?,
    })
}

const FLOW_SELECT: &str =
    "SELECT name, version, hash, entry, owner, files, bytes, created, message FROM flows";

fn flow_from(r: &AnyRow) -> Result<FlowRecord, StoreError> {
    let number = |column: &'static str| -> Result<u64, StoreError> {
        let v: i64 = get(r, column)?;
        u64::try_from(v).map_err(|_| StoreError::BadValue {
            table: "flows",
            column,
            value: v.to_string(),
        })
    };
    let version = u32::try_from(number("version")?).map_err(|_| StoreError::BadValue {
        table: "flows",
        column: "version",
        value: "too large".into(),
    })?;
    Ok(FlowRecord {
        name: get(r, "name")?,
        version,
        hash: get(r, "hash")?,
        entry: get(r, "entry")?,
        owner: get(r, "owner")?,
        files: number("files")?,
        bytes: number("bytes")?,
        created: get(r, "created")?,
        message: get(r, "message")?,
    })
}

fn environment_from(r: &AnyRow) -> Result<EnvironmentRecord, StoreError> {
    let version: i64 = get(r, "version")?;
    Ok(EnvironmentRecord {
        name: get(r, "name")?,
        version: u32::try_from(version).map_err(|_| StoreError::BadValue {
            table: "environments",
            column: "version",
            value: version.to_string(),
        })?,
        owner: get(r, "owner")?,
        base_version: get(r, "base_version")?,
        requirements: get(r, "requirements")?,
        created: get(r, "created")?,
    })
}

fn run_from(r: &AnyRow) -> Result<RunRecord, StoreError> {
    let json = |column: &'static str, text: String| {
        serde_json::from_str::<Value>(&text).map_err(|_| StoreError::BadValue {
            table: "runs",
            column,
            value: text,
        })
    };
    let result: Option<String> = get(r, "result")?;
    Ok(RunRecord {
        id: get(r, "id")?,
        session_id: get(r, "session_id")?,
        kind: dec("runs", "kind", get(r, "kind")?)?,
        status: dec("runs", "status", get(r, "status")?)?,
        request: json("request", get(r, "request")?)?,
        result: result.map(|t| json("result", t)).transpose()?,
        created: get(r, "created")?,
        finished: get(r, "finished")?,
    })
}

#[cfg(unix)]
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        StoreError::IoAt {
            action: "cannot restrict permissions of",
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// An exclusive lock on a file, held while migrating: the open file holds it and closing it
/// (drop) releases it.
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, StoreError> {
        let io_err = |source| StoreError::IoAt {
            action: "cannot lock",
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
        file.lock().map_err(io_err)?;
        Ok(FileLock { _file: file })
    }
}
