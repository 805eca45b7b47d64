//! The one error type of this crate. Every variant names what it was working on: a path, a
//! connection name, a field.

use std::path::PathBuf;

/// Anything that can go wrong reading or writing flowrt's local state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Filesystem failure; `fs-err` puts the path in the message.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// A filesystem failure where the path has to be added by hand.
    #[error("{action} {path}: {source}")]
    IoAt {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The connection YAML is not valid YAML (or not a mapping).
    #[error("{path}: invalid connection YAML: {message}")]
    Yaml { path: PathBuf, message: String },

    /// `type:` names a kind flowrt does not know.
    #[error(
        "{path}: unknown connection type `{found}`; expected one of: {}",
        connection_types()
    )]
    UnknownType { path: PathBuf, found: String },

    /// A required field is absent (or empty).
    #[error("{path}: missing required field `{field}`{hint}")]
    MissingField {
        path: PathBuf,
        field: String,
        /// How to write it, when the field is one every connection has (else empty).
        hint: String,
    },

    /// A field is present but its value is unusable.
    #[error("{path}: invalid field `{field}`: {reason}")]
    InvalidField {
        path: PathBuf,
        field: String,
        reason: String,
    },

    /// A connection name flowrt cannot keep.
    #[error(
        "invalid connection name {name:?}: use 1 to 200 characters, none of them a control character (a tab, a line break), and fewer when many are not ASCII letters, digits, `_` or `-` (each of their bytes takes 3 of the 240 its file name may have)"
    )]
    InvalidName { name: String },

    /// A user id that cannot name a folder.
    #[error(
        "invalid user id `{id}`: use only letters, digits, `_`, `-` and `.` (not leading), at most 200 characters"
    )]
    InvalidUserId { id: String },

    /// The key file is readable or writable by group or others.
    #[error(
        "secret key file {path} is accessible by group or others (mode {mode:03o}); run `chmod 600 {path}` and retry"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },

    /// The key file exists but is not a 32-byte key.
    #[error("secret key file {path} is corrupt: expected 32 bytes, found {len}")]
    KeyInvalid { path: PathBuf, len: usize },

    /// A stored secret could not be decrypted: wrong key, or the file was altered.
    #[error(
        "cannot decrypt secret `{field}` of connection `{name}`: the secret key does not match or the stored value was altered"
    )]
    Decrypt { name: String, field: String },

    /// Encryption failed (should not happen with a valid key).
    #[error("cannot encrypt secret `{field}` of connection `{name}`")]
    Encrypt { name: String, field: String },

    /// A stored connection file cannot be read back.
    #[error("stored connection file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// The operating system's random source failed.
    #[error("cannot obtain random bytes: {0}")]
    Random(String),

    /// A database operation failed.
    #[error("{action}: {source}")]
    Db {
        action: String,
        #[source]
        source: sqlx::Error,
    },

    /// The database schema could not be brought up to date.
    #[error("cannot migrate the database {path}: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// `--database` names something other than a PostgreSQL URL.
    #[error(
        "unsupported database `{given}`: give a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB), or leave --database out for SQLite under FLOWRT_HOME"
    )]
    UnknownDatabase { given: String },

    /// Text the database cannot hold (PostgreSQL refuses NUL characters in text).
    #[error("{action}: a value holds a NUL character (\\0), which names and ids cannot contain")]
    NulInText { action: String },

    /// A record with this name already exists.
    #[error("{what} `{name}` already exists")]
    Exists { what: &'static str, name: String },

    /// No record with this name or id.
    #[error("no {what} `{name}`")]
    NotFound { what: &'static str, name: String },

    /// A stored value that this version of flowrt cannot read.
    #[error("database column {table}.{column} holds an unknown value `{value}`")]
    BadValue {
        table: &'static str,
        column: &'static str,
        value: String,
    },

    /// An identity's feed token could not be decrypted.
    #[error(
        "cannot decrypt the feed token of identity `{name}`: the secret key does not match or the stored value was altered"
    )]
    IdentitySecret { name: String },
}

/// The connection types a YAML's `type:` may name, as messages list them.
pub(crate) fn connection_types() -> String {
    flowrt_api::ConnectionKind::ALL
        .map(flowrt_api::ConnectionKind::as_str)
        .join(", ")
}
