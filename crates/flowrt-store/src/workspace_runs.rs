//! Batch and evaluation runs as workspace records: one name per workspace, owned by the user who
//! created it, read the same way whichever session (or server, or node) executed it, and kept when
//! that session is stopped, reset or deleted. The store keeps what a list needs (owner, session,
//! status, created) and the record clients see, as JSON; the run's line records, node events,
//! logs and outputs are blobs the server keeps beside the store.

use crate::control::{db, get, now_ms, Store};
use crate::error::StoreError;
use serde_json::Value;
use sqlx::any::AnyRow;

/// A run of the workspace.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkspaceRun {
    pub name: String,
    /// The user who created it.
    pub owner: String,
    /// The session that executes (or executed) it.
    pub session_id: String,
    /// `Running`, `Completed`, `Failed` or `Canceled`.
    pub status: String,
    /// What clients see of it (`flowrt_api::responses::RunView`).
    pub record: Value,
    /// Unix ms.
    pub created: i64,
    pub archived: bool,
}

const SELECT: &str =
    "SELECT name, owner, session_id, status, record, created, archived FROM workspace_runs";

fn from_row(r: &AnyRow) -> Result<WorkspaceRun, StoreError> {
    let text: String = get(r, "record")?;
    let archived = match sqlx::Row::try_get::<bool, _>(r, "archived") {
        Ok(b) => b,
        Err(_) => get::<i64>(r, "archived")? != 0,
    };
    Ok(WorkspaceRun {
        name: get(r, "name")?,
        owner: get(r, "owner")?,
        session_id: get(r, "session_id")?,
        status: get(r, "status")?,
        record: serde_json::from_str(&text).unwrap_or(Value::Null),
        created: get(r, "created")?,
        archived,
    })
}

impl Store {
    /// Record a new run `name` (its record's `status` says how it starts). A name already in the
    /// workspace is [`StoreError::Exists`], whoever owns it.
    pub async fn insert_workspace_run(
        &self,
        name: &str,
        owner: &str,
        session_id: &str,
        record: &Value,
    ) -> Result<WorkspaceRun, StoreError> {
        let run = WorkspaceRun {
            name: name.to_string(),
            owner: owner.to_string(),
            session_id: session_id.to_string(),
            status: record["status"].as_str().unwrap_or("Running").to_string(),
            record: record.clone(),
            created: now_ms(),
            archived: false,
        };
        sqlx::query(
            "INSERT INTO workspace_runs (name, owner, session_id, status, record, created, archived)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(name)
        .bind(owner)
        .bind(session_id)
        .bind(&run.status)
        .bind(record.to_string())
        .bind(run.created)
        .bind(false)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if crate::control::is_unique_violation(&e) {
                StoreError::Exists {
                    what: "run",
                    name: name.to_string(),
                }
            } else {
                db(format!("cannot record run `{name}`"))(e)
            }
        })?;
        Ok(run)
    }

    /// Replace run `name`'s record (and the status it states). Whether the run exists.
    pub async fn update_workspace_run(
        &self,
        name: &str,
        record: &Value,
    ) -> Result<bool, StoreError> {
        let status = record["status"].as_str().unwrap_or("Running");
        let done =
            sqlx::query("UPDATE workspace_runs SET status = $1, record = $2 WHERE name = $3")
                .bind(status)
                .bind(record.to_string())
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(db(format!("cannot update run `{name}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Replace run `name`'s record only while its status is still `expected` (compare and
    /// set: two writers cannot both move a run on from one status). Whether it was replaced.
    pub async fn update_workspace_run_from(
        &self,
        name: &str,
        expected: &str,
        record: &Value,
    ) -> Result<bool, StoreError> {
        let status = record["status"].as_str().unwrap_or("Running");
        let done = sqlx::query(
            "UPDATE workspace_runs SET status = $1, record = $2 WHERE name = $3 AND status = $4",
        )
        .bind(status)
        .bind(record.to_string())
        .bind(name)
        .bind(expected)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot update run `{name}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Archive (or restore) run `name`. Whether it exists.
    pub async fn set_workspace_run_archived(
        &self,
        name: &str,
        archived: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE workspace_runs SET archived = $1 WHERE name = $2")
            .bind(archived)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot archive run `{name}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// The run `name`.
    pub async fn get_workspace_run(&self, name: &str) -> Result<Option<WorkspaceRun>, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot read run `{name}`")))?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every run of the workspace, oldest first.
    pub async fn list_workspace_runs(&self) -> Result<Vec<WorkspaceRun>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY created, name"))
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot list runs"))?;
        rows.iter().map(from_row).collect()
    }

    /// The runs still `Running`: what a restarted server goes on following.
    pub async fn list_running_workspace_runs(&self) -> Result<Vec<WorkspaceRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE status = 'Running' ORDER BY created, name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list running runs"))?;
        rows.iter().map(from_row).collect()
    }

    /// Delete run `name`'s record. Whether it existed.
    pub async fn delete_workspace_run(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM workspace_runs WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot delete run `{name}`")))?;
        Ok(done.rows_affected() == 1)
    }
}
