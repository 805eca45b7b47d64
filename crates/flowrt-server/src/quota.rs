//! Each user's storage quota: what their flow versions, uploaded data and workspace runs take on
//! the server's disk. An upload or a run that would pass it is refused with 507 and what uses the
//! space, so one user cannot fill the disk the whole team shares.

use crate::error::{ApiErr, ApiResult};
use crate::AppState;
use axum::http::StatusCode;

/// What a user's things take, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub flows: u64,
    pub data: u64,
    pub runs: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.flows + self.data + self.runs
    }
}

/// The bytes of every file under `dir` (links are not followed; a missing folder is empty).
/// What user `owner`'s flow versions, data and runs take.
pub async fn usage(state: &AppState, owner: &str) -> ApiResult<Usage> {
    let flows = state
        .store
        .list_flows()
        .await?
        .iter()
        .filter(|f| f.owner == owner)
        .map(|f| f.bytes)
        .sum();
    let runs: Vec<String> = state
        .store
        .list_workspace_runs()
        .await?
        .into_iter()
        .filter(|r| r.owner == owner)
        .map(|r| r.name)
        .collect();
    let home = &state.config.home;
    let measuring = |e| ApiErr::internal("measuring storage", e);
    let data = state
        .blobs
        .bytes_under(&home.join("data").join(owner))
        .await
        .map_err(measuring)?;
    let mut run_bytes = 0;
    for r in &runs {
        run_bytes += state
            .blobs
            .bytes_under(&flowrt_workspace::runs::blob_dir(home, r))
            .await
            .map_err(measuring)?;
    }
    let runs = run_bytes;
    Ok(Usage { flows, data, runs })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Refuse (507) when user `owner`'s storage, with `adding` more bytes, would pass the quota.
pub async fn check(state: &AppState, owner: &str, adding: u64) -> ApiResult<()> {
    let quota = state.config.user_quota_bytes;
    let used = usage(state, owner).await?;
    if used.total().saturating_add(adding) <= quota {
        return Ok(());
    }
    Err(ApiErr::new(
        StatusCode::INSUFFICIENT_STORAGE,
        flowrt_api::ErrorCode::QuotaExceeded,
        format!(
            "this would pass your storage quota of {}: your flow versions take {}, your data {}, your runs {}{}\nhint: delete runs you no longer need (`flowrt run delete NAME`), or ask the server's operator for a larger --user-quota-mib",
            mib(quota),
            mib(used.flows),
            mib(used.data),
            mib(used.runs),
            if adding > 0 {
                format!(", and this adds {}", mib(adding))
            } else {
                String::new()
            }
        ),
    ))
}
