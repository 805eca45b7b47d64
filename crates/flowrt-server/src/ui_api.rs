//! Small read-only `/api/v1` routes the web UI needs that the resource routes did not offer: a
//! session's saved `requirements.txt` (what its *edit requirements* box starts from and what the
//! installed packages are compared with) and the server's limits a page states (the interactive
//! test timeout). Both authenticate and authorize like every other route.

use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::openapi::{doc, json};
use crate::routing::ApiRoutes;
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use flowrt_api::responses::{Limits, Requirements};
use flowrt_api::workspace::Permission;

pub fn routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/limits",
            Permission::Read,
            limits,
            doc("The server's limits a page states: {interactive_timeout_s}.")
                .reply(200, json::<Limits>()),
        )
        .get(
            "/api/v1/sessions/{id}/requirements",
            Permission::Read,
            requirements,
            doc("A session's saved requirements file {path, text, flow_ref} (what the web UI edits).")
                .reply(200, json::<Requirements>()),
        )
}

async fn limits(State(state): State<AppState>, _caller: Caller) -> Json<Limits> {
    Json(Limits {
        interactive_timeout_s: state.config.interactive_timeout.as_secs_f64(),
    })
}

async fn requirements(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Requirements>> {
    let s = crate::sessions::visible(&state, &caller, &id).await?;
    let Some(reference) = s.flow_ref.clone() else {
        return Ok(Json(Requirements {
            path: "requirements.txt".into(),
            text: String::new(),
            flow_ref: None,
        }));
    };
    let rec = crate::flows::resolve(&state, &caller, &reference).await?;
    let (snapshot, load_from) = crate::flows::snapshot_dir(&state, &rec).await?;
    let (path, text) = tokio::task::spawn_blocking(move || -> Result<(String, String), String> {
        let flow =
            flowrt_flow::load_flow(&load_from, &Default::default()).map_err(|e| e.to_string())?;
        // Inside the snapshot: the loader has checked that this path stays there.
        let rel = flow.requirements_rel();
        let text = std::fs::read_to_string(snapshot.join(&rel)).unwrap_or_default();
        Ok((rel, text))
    })
    .await
    .map_err(|e| ApiErr::internal("reading the requirements", e))?
    .map_err(ApiErr::bad_request)?;
    Ok(Json(Requirements {
        path,
        text,
        flow_ref: Some(reference),
    }))
}
