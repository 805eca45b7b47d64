//! Facts every server on one database must agree on, kept in the database itself: where the
//! workspace's files are (`blobs`), and which key its secrets are sealed with (`secret_key`, a
//! fingerprint). The first server to start records them; a later one that disagrees is refused
//! before it serves anything.

use crate::control::{db, get, Store};
use crate::error::StoreError;

impl Store {
    /// The value of setting `name`, if any.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot read setting {name}")))?;
        row.map(|r| get::<String>(&r, "value")).transpose()
    }

    /// The value of setting `name`, recording `value` first when it has none: the first of
    /// several servers starting at once decides.
    pub async fn agree_on(&self, name: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot record setting {name}")))?;
        Ok(self
            .setting(name)
            .await?
            .unwrap_or_else(|| value.to_string()))
    }

    /// Change setting `name` from `from` to `to`; `false` when it no longer was `from`.
    pub async fn replace_setting(
        &self,
        name: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE settings SET value = $1 WHERE name = $2 AND value = $3")
            .bind(to)
            .bind(name)
            .bind(from)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot change setting {name}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// The fingerprint of the key this store seals secrets with (loading, or creating, it).
    pub fn secret_key_fingerprint(&self) -> Result<String, StoreError> {
        Ok(crate::secret::load_key(self.home())?
            .fingerprint()
            .to_string())
    }
}
