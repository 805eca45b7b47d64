//! `/api/v1/endpoints…`: endpoints, their deployments and traffic, and their requests.
//! Everyone who may read sees every endpoint; its owner (and admins) change it. An endpoint's
//! keys are shown once, when made or replaced.

use super::serving::load_facts;
use crate::auth::Caller;
use crate::error::{ApiErr, ApiResult};
use crate::openapi::{doc, json, list_of, Reply};
use crate::routing::{allowed, allows_all, offer, ApiRoutes};
use crate::AppState;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use flowrt_api::endpoints::*;
use flowrt_api::workspace::Permission;
use flowrt_api::SessionSize;
use flowrt_store::{Deployment, Endpoint, ScoreFilter, ScoreRow};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

const DEFAULT_RETENTION_DAYS: u32 = 30;
const MAX_RETENTION_DAYS: u32 = 3650;
/// The most instances one deployment may ask for.
const MAX_INSTANCES: u32 = 64;
const DEFAULT_TARGET_CONCURRENCY: u32 = 8;

/// Endpoints, their deployments, their request records, and scoring.
pub fn routes() -> ApiRoutes {
    endpoint_routes()
        .merge(deployment_routes())
        .merge(request_record_routes())
        .merge(scoring_routes())
}

/// Endpoints themselves: listed, created, their traffic split changed, deleted, their keys replaced.
fn endpoint_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/endpoints",
            Permission::Read,
            list,
            doc("Every endpoint, with its deployments, their instances and the traffic split.")
                .reply(200, list_of::<EndpointView>()),
        )
        .post(
            "/api/v1/endpoints",
            Permission::EndpointsWrite,
            create,
            doc("Create an endpoint {name, retention_days}; its primary and secondary keys are shown once, only their hashes are kept (endpoints/write).")
                .body::<CreateEndpoint>()
                .reply(201, json::<CreatedEndpoint>()),
        )
        .get(
            "/api/v1/endpoints/{name}",
            Permission::Read,
            show,
            doc("One endpoint with its deployments.")
                .reply(200, json::<EndpointView>()),
        )
        .patch(
            "/api/v1/endpoints/{name}",
            Permission::EndpointsWrite,
            update,
            doc("Set the traffic split {traffic: {deployment: percent}} (adding up to 100) and retention_days (its owner or an admin).")
                .body::<UpdateEndpoint>()
                .reply(200, json::<EndpointView>()),
        )
        .delete(
            "/api/v1/endpoints/{name}",
            Permission::EndpointsWrite,
            delete,
            doc("Delete an endpoint, its deployments (their instances stop) and its request records.")
                .reply(204, Reply::Empty),
        )
        .post(
            "/api/v1/endpoints/{name}/keys",
            Permission::EndpointsWrite,
            regenerate_key,
            doc("Replace a key {key: primary|secondary}; the new key is shown once and the old one stops working at once.")
                .body::<RegenerateKey>()
                .reply(200, json::<EndpointKeys>()),
        )
}

/// An endpoint's deployments: each a flow version on instances the server keeps running.
fn deployment_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/endpoints/{name}/deployments",
            Permission::Read,
            list_deployments,
            doc("An endpoint's deployments.")
                .reply(200, list_of::<DeploymentView>()),
        )
        .post(
            "/api/v1/endpoints/{name}/deployments",
            Permission::EndpointsWrite,
            create_deployment,
            doc("Deploy a flow version {name, flow: NAME@vN, instances, size, min_instances, max_instances, target_concurrency, sample_rate, redact_payloads}: its instances are sealed sessions the server keeps running.")
                .body::<CreateDeployment>()
                .reply(201, json::<DeploymentView>()),
        )
        .get(
            "/api/v1/endpoints/{name}/deployments/{deployment}",
            Permission::Read,
            show_deployment,
            doc("One deployment: status, revision, instances and their sessions.")
                .reply(200, json::<DeploymentView>()),
        )
        .patch(
            "/api/v1/endpoints/{name}/deployments/{deployment}",
            Permission::EndpointsWrite,
            update_deployment,
            doc("Change a deployment: a new flow version rolls its instances over without downtime (new ones ready before old ones drain); instances, min/max, sampling, redaction.")
                .body::<UpdateDeployment>()
                .reply(200, json::<DeploymentView>()),
        )
        .delete(
            "/api/v1/endpoints/{name}/deployments/{deployment}",
            Permission::EndpointsWrite,
            delete_deployment,
            doc("Delete a deployment with no traffic (or the only one): its instances drain and stop.")
                .reply(204, Reply::Empty),
        )
}

/// What an endpoint was asked: its scoring requests, each with its trace, and the dashboard over them.
fn request_record_routes() -> ApiRoutes {
    ApiRoutes::default()
        .get(
            "/api/v1/endpoints/{name}/requests",
            Permission::Read,
            list_requests,
            doc("The endpoint's scoring requests, newest first (?deployment, status=ok|error, before, limit).")
                .query::<String>("deployment")
                .query::<String>("status")
                .query::<i64>("before")
                .query::<usize>("limit")
                .reply(200, list_of::<ScoreRequestView>()),
        )
        .get(
            "/api/v1/endpoints/{name}/requests/{id}",
            Permission::Read,
            show_request,
            doc("One scoring request with its trace: inputs, outputs, nodes' latency and tokens, spans (when sampled, payloads unless redacted).")
                .reply(200, json::<ScoreRequestDetail>()),
        )
        .get(
            "/api/v1/endpoints/{name}/stats",
            Permission::Read,
            stats,
            doc("The endpoint's dashboard over ?minutes (default 60): requests/s, errors, p50/p99 latency and tokens, in about sixty buckets.")
                .query::<u64>("minutes")
                .query::<String>("deployment")
                .reply(200, json::<EndpointStats>()),
        )
}

/// Scoring itself, outside `/api/v1`: promptflow's serving contract.
fn scoring_routes() -> ApiRoutes {
    ApiRoutes::default()
        .route(
            "post",
            "/endpoints/{name}/score",
            Permission::Public,
            axum::routing::post(super::score::score)
                .layer(DefaultBodyLimit::max(super::score::MAX_SCORE_BODY)),
            doc("Score: the flow's inputs as a JSON object in, its outputs as JSON out (promptflow's serving contract; with Accept: text/event-stream the streamed output as data events). Authorization: Bearer with an endpoint key, or a user token with endpoints/score; azureml-model-deployment names a deployment, else the traffic split picks one.")
                .reply(200, Reply::Object),
        )
}

fn check_name(what: &str, name: &str) -> ApiResult<()> {
    // Endpoint and deployment names go in URLs and a header: no dots.
    flowrt_api::names::check(what, name, 64)
        .and_then(|_| {
            if name.contains('.') {
                Err(format!(
                    "invalid {what} name '{name}': use letters, digits, '_' and '-'"
                ))
            } else {
                Ok(())
            }
        })
        .map_err(ApiErr::bad_request)
}

async fn user_names(state: &AppState) -> ApiResult<HashMap<String, String>> {
    Ok(state
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect())
}

async fn find(state: &AppState, name: &str) -> ApiResult<Endpoint> {
    state.store.get_endpoint(name).await?.ok_or_else(|| {
        ApiErr::not_found(format!(
            "endpoint '{name}' does not exist; `flowrt endpoint list` shows them"
        ))
    })
}

/// Who changes an endpoint (its traffic, keys and deployments) or deletes it: its owner and
/// admins. Every changing handler asks this (through [`modifiable`]), and the views' `actions`
/// are listed from it.
fn may_manage(caller: &Caller, e: &Endpoint) -> ApiResult<()> {
    if caller.may_modify(&e.owner) {
        Ok(())
    } else {
        Err(ApiErr::forbidden(format!(
            "endpoint '{}' belongs to another user; only its owner and admins change it",
            e.name
        )))
    }
}

async fn modifiable(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Endpoint> {
    let e = find(state, name).await?;
    may_manage(caller, &e)?;
    Ok(e)
}

/// May the caller deploy a flow version: create an endpoint and deploy behind it (or behind
/// one they manage)? What a flow's, a run's and the caller's own `deploy` action say.
pub(crate) fn may_deploy(caller: &Caller) -> bool {
    allows_all(
        &caller.0,
        [
            offer((), "post", "/api/v1/endpoints", true),
            offer((), "post", "/api/v1/endpoints/{name}/deployments", true),
        ],
    )
}

/// What `caller` may do with endpoint `e`: the operations the route table lets them reach whose
/// handler's check passes (`may_manage`; scoring with their token: `score::may_score`).
fn endpoint_actions(caller: &Caller, e: &Endpoint) -> Vec<EndpointAction> {
    let manage = may_manage(caller, e).is_ok();
    let one = "/api/v1/endpoints/{name}";
    allowed(
        &caller.0,
        [
            offer(
                EndpointAction::Score,
                "post",
                "/endpoints/{name}/score",
                super::score::may_score(&caller.0, e).is_ok(),
            ),
            offer(EndpointAction::Update, "patch", one, manage),
            offer(
                EndpointAction::RegenerateKeys,
                "post",
                "/api/v1/endpoints/{name}/keys",
                manage,
            ),
            offer(
                EndpointAction::Deploy,
                "post",
                "/api/v1/endpoints/{name}/deployments",
                manage,
            ),
            offer(EndpointAction::Delete, "delete", one, manage),
        ],
    )
}

/// What `caller` may do with a deployment of endpoint `e` (the endpoint's rule: `may_manage`).
fn deployment_actions(caller: &Caller, e: &Endpoint) -> Vec<DeploymentAction> {
    let manage = may_manage(caller, e).is_ok();
    let one = "/api/v1/endpoints/{name}/deployments/{deployment}";
    allowed(
        &caller.0,
        [
            offer(DeploymentAction::Update, "patch", one, manage),
            offer(DeploymentAction::Delete, "delete", one, manage),
        ],
    )
}

async fn find_deployment(state: &AppState, endpoint: &str, name: &str) -> ApiResult<Deployment> {
    state
        .store
        .get_deployment(endpoint, name)
        .await?
        .ok_or_else(|| {
            ApiErr::not_found(format!(
                "endpoint '{endpoint}' has no deployment '{name}'; `flowrt deployment list {endpoint}` shows them"
            ))
        })
}

/// A deployment as the API shows it, with its instances and how many serve.
async fn deployment_view(
    state: &AppState,
    caller: &Caller,
    d: &Deployment,
    endpoint: &Endpoint,
    names: &HashMap<String, String>,
) -> ApiResult<DeploymentView> {
    let rows: Vec<_> = state
        .store
        .list_instances()
        .await?
        .into_iter()
        .filter(|r| r.endpoint == d.endpoint && r.deployment == d.name)
        .collect();
    let routed = state.serving.routed(&d.endpoint, &d.name);
    let mut replicas = Vec::new();
    for r in &rows {
        let status = state
            .store
            .get_session(&r.session_id)
            .await?
            .map(|s| s.status)
            .unwrap_or(flowrt_api::SessionStatus::NotAvailable);
        replicas.push(InstanceView {
            session_id: r.session_id.clone(),
            revision: r.revision,
            slot: r.slot,
            routed: status == flowrt_api::SessionStatus::Running && routed.contains(&r.session_id),
            status,
            in_flight: state.serving.in_flight(&r.session_id),
        });
    }
    let ready = replicas.iter().filter(|r| r.routed).count() as u32;
    let current_ready = replicas
        .iter()
        .filter(|r| r.revision == d.revision && r.routed)
        .count() as u32;
    let old = replicas.iter().any(|r| r.revision < d.revision);
    let status = if ready == 0 {
        "Creating"
    } else if old || current_ready < d.instances && replicas.len() as u32 != ready {
        "Updating"
    } else if current_ready >= d.instances {
        "Succeeded"
    } else {
        "Degraded"
    };
    Ok(DeploymentView {
        endpoint: d.endpoint.clone(),
        name: d.name.clone(),
        owner: names.get(&d.owner).cloned().unwrap_or_default(),
        flow: d.flow_ref.clone(),
        revision: d.revision,
        instances: d.instances,
        min_instances: d.min_instances,
        max_instances: d.max_instances,
        target_concurrency: d.target_concurrency,
        size: SessionSize::parse(&d.size).unwrap_or_default(),
        sample_rate: d.sample_rate,
        redact_payloads: d.redact_payloads,
        status: status.to_string(),
        ready,
        problem: state.serving.problem(&d.endpoint, &d.name),
        traffic: endpoint.traffic.get(&d.name).copied().unwrap_or(0),
        replicas,
        created: d.created,
        updated: d.updated,
        actions: deployment_actions(caller, endpoint),
    })
}

async fn endpoint_view(
    state: &AppState,
    caller: &Caller,
    e: &Endpoint,
    names: &HashMap<String, String>,
) -> ApiResult<EndpointView> {
    let mut deployments = Vec::new();
    for d in state.store.list_deployments(Some(&e.name)).await? {
        deployments.push(deployment_view(state, caller, &d, e, names).await?);
    }
    Ok(EndpointView {
        name: e.name.clone(),
        owner: names.get(&e.owner).cloned().unwrap_or_default(),
        scoring_uri: format!("/endpoints/{}/score", e.name),
        traffic: e.traffic.clone(),
        retention_days: e.retention_days,
        deployments,
        created: e.created,
        updated: e.updated,
        actions: endpoint_actions(caller, e),
    })
}

fn check_retention(days: Option<u32>) -> ApiResult<Option<u32>> {
    match days {
        Some(d) if d == 0 || d > MAX_RETENTION_DAYS => Err(ApiErr::bad_request(format!(
            "retention_days is {d}: give 1 to {MAX_RETENTION_DAYS}"
        ))),
        d => Ok(d),
    }
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<EndpointView>>> {
    let names = user_names(&state).await?;
    let mut out = Vec::new();
    for e in state.store.list_endpoints().await? {
        out.push(endpoint_view(&state, &caller, &e, &names).await?);
    }
    Ok(Json(out))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateEndpoint>,
) -> ApiResult<(StatusCode, Json<CreatedEndpoint>)> {
    check_name("endpoint", &req.name)?;
    let days = check_retention(req.retention_days)?.unwrap_or(DEFAULT_RETENTION_DAYS);
    let (e, primary, secondary) = state
        .store
        .create_endpoint(&req.name, &caller.0.id, days)
        .await?;
    state.serving.wake.notify_one();
    let names = user_names(&state).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEndpoint {
            endpoint: endpoint_view(&state, &caller, &e, &names).await?,
            keys: EndpointKeys {
                primary: Some(primary),
                secondary: Some(secondary),
            },
        }),
    ))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<EndpointView>> {
    let e = find(&state, &name).await?;
    let names = user_names(&state).await?;
    Ok(Json(endpoint_view(&state, &caller, &e, &names).await?))
}

/// The split must name this endpoint's deployments and add up to 100 (or be empty).
fn check_traffic(
    endpoint: &str,
    traffic: &IndexMap<String, u32>,
    deployments: &[Deployment],
) -> ApiResult<()> {
    for name in traffic.keys() {
        if !deployments.iter().any(|d| &d.name == name) {
            // An endpoint with no deployment yet: say how to make one rather than list nothing.
            let has = if deployments.is_empty() {
                format!("it has no deployments yet; `flowrt deployment create {endpoint}/{name} --flow NAME@vN` adds one")
            } else {
                let names: Vec<&str> = deployments.iter().map(|d| d.name.as_str()).collect();
                format!("it has: {}", names.join(", "))
            };
            return Err(ApiErr::bad_request(format!(
                "traffic names deployment '{name}', which endpoint '{endpoint}' does not have; {has}"
            )));
        }
    }
    let total: u32 = traffic.values().sum();
    if !traffic.is_empty() && total != 100 {
        return Err(ApiErr::bad_request(format!(
            "traffic adds up to {total}%: the percents must add up to 100 (like blue=90,green=10)"
        )));
    }
    Ok(())
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<UpdateEndpoint>,
) -> ApiResult<Json<EndpointView>> {
    let e = modifiable(&state, &caller, &name).await?;
    let deployments = state.store.list_deployments(Some(&name)).await?;
    let traffic = match req.traffic {
        Some(t) => {
            let t: IndexMap<String, u32> = t.into_iter().filter(|(_, p)| *p > 0).collect();
            check_traffic(&name, &t, &deployments)?;
            t
        }
        None => e.traffic.clone(),
    };
    let days = check_retention(req.retention_days)?.unwrap_or(e.retention_days);
    state.store.update_endpoint(&name, &traffic, days).await?;
    state.serving.wake.notify_one();
    let e = find(&state, &name).await?;
    let names = user_names(&state).await?;
    Ok(Json(endpoint_view(&state, &caller, &e, &names).await?))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    modifiable(&state, &caller, &name).await?;
    // Its instances are stopped by the supervisor, which finds their deployments gone.
    state.store.delete_endpoint(&name).await?;
    state.serving.wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

async fn regenerate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<RegenerateKey>,
) -> ApiResult<Json<EndpointKeys>> {
    modifiable(&state, &caller, &name).await?;
    let secondary = match req.key.as_str() {
        "primary" => false,
        "secondary" => true,
        other => {
            return Err(ApiErr::bad_request(format!(
                "key is '{other}': say which to replace, primary or secondary"
            )))
        }
    };
    let key = state
        .store
        .regenerate_endpoint_key(&name, secondary)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("endpoint '{name}' does not exist")))?;
    state.serving.wake.notify_one();
    Ok(Json(if secondary {
        EndpointKeys {
            primary: None,
            secondary: Some(key),
        }
    } else {
        EndpointKeys {
            primary: Some(key),
            secondary: None,
        }
    }))
}

async fn list_deployments(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<DeploymentView>>> {
    let e = find(&state, &name).await?;
    let names = user_names(&state).await?;
    Ok(Json(
        endpoint_view(&state, &caller, &e, &names)
            .await?
            .deployments,
    ))
}

/// The instance settings a create or update ends with, checked.
struct Scale {
    instances: u32,
    min: u32,
    max: u32,
    target: u32,
}

fn check_scale(
    instances: Option<u32>,
    min: Option<u32>,
    max: Option<u32>,
    target: Option<u32>,
    was: Option<&Deployment>,
) -> ApiResult<Scale> {
    let was_scaling = was.is_some_and(|d| d.max_instances > d.min_instances);
    let (instances, min, max) = if min.is_some() || max.is_some() || was_scaling {
        // A range: the count follows the load inside it.
        let min = min.or(was.map(|d| d.min_instances)).unwrap_or(1);
        let max = max
            .or(was.map(|d| d.max_instances))
            .unwrap_or(min.max(instances.unwrap_or(min)));
        let n = instances
            .or(was.map(|d| d.instances.clamp(min, max.max(min))))
            .unwrap_or(min);
        if !(min..=max).contains(&n) {
            return Err(ApiErr::bad_request(format!(
                "instances is {n}: it must lie between min ({min}) and max ({max})"
            )));
        }
        (n, min, max)
    } else {
        let n = instances.or(was.map(|d| d.instances)).unwrap_or(1);
        (n, n, n)
    };
    if min == 0 || min > max || max > MAX_INSTANCES {
        return Err(ApiErr::bad_request(format!(
            "instances must satisfy 1 <= min ({min}) <= max ({max}) <= {MAX_INSTANCES} (delete a deployment to stop serving it)"
        )));
    }
    let target = target
        .or(was.map(|d| d.target_concurrency))
        .unwrap_or(DEFAULT_TARGET_CONCURRENCY);
    if target == 0 || target > 10_000 {
        return Err(ApiErr::bad_request(format!(
            "target_concurrency is {target}: give 1 to 10000 requests per instance"
        )));
    }
    Ok(Scale {
        instances,
        min,
        max,
        target,
    })
}

fn check_sample_rate(rate: Option<f64>) -> ApiResult<Option<f64>> {
    match rate {
        Some(r) if !(0.0..=1.0).contains(&r) || r.is_nan() => Err(ApiErr::bad_request(format!(
            "sample_rate is {r}: give a share between 0 (no traces) and 1 (every request)"
        ))),
        r => Ok(r),
    }
}

/// Resolve `flow` to a version the caller may deploy and check that it loads.
async fn deployable(state: &AppState, caller: &Caller, flow: &str) -> ApiResult<(String, String)> {
    if flow.contains('/') {
        return Err(ApiErr::bad_request(format!(
            "'{flow}' looks like a path; the server deploys flows pushed to it: `flowrt flow push DIR`, then name the flow (NAME@vN)"
        )));
    }
    let rec = crate::flows::resolve(state, caller, flow).await?;
    let (stored, _) = crate::flows::snapshot_dir(state, &rec).await?;
    let stored = stored.display().to_string();
    load_facts(state, &stored).await.map_err(|e| {
        ApiErr::bad_request(format!("flow {} cannot be deployed: {e}", rec.reference()))
    })?;
    Ok((rec.reference(), stored))
}

async fn create_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<CreateDeployment>,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    let e = modifiable(&state, &caller, &name).await?;
    check_name("deployment", &req.name)?;
    let scale = check_scale(
        req.instances,
        req.min_instances,
        req.max_instances,
        req.target_concurrency,
        None,
    )?;
    let sample_rate = check_sample_rate(req.sample_rate)?.unwrap_or(1.0);
    let (flow_ref, flow_dir) = deployable(&state, &caller, &req.flow).await?;
    let d = state
        .store
        .create_deployment(&Deployment {
            endpoint: name.clone(),
            name: req.name.clone(),
            owner: caller.0.id.clone(),
            flow_ref,
            flow_dir,
            revision: 1,
            instances: scale.instances,
            min_instances: scale.min,
            max_instances: scale.max,
            target_concurrency: scale.target,
            size: req.size.as_str().to_string(),
            sample_rate,
            redact_payloads: req.redact_payloads,
            created: 0,
            updated: 0,
        })
        .await?;
    // The first deployment of an endpoint takes its traffic.
    if e.traffic.is_empty() {
        let traffic = IndexMap::from([(d.name.clone(), 100)]);
        state
            .store
            .update_endpoint(&name, &traffic, e.retention_days)
            .await?;
    }
    state.serving.wake.notify_one();
    let e = find(&state, &name).await?;
    let names = user_names(&state).await?;
    Ok((
        StatusCode::CREATED,
        Json(deployment_view(&state, &caller, &d, &e, &names).await?),
    ))
}

async fn show_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, deployment)): Path<(String, String)>,
) -> ApiResult<Json<DeploymentView>> {
    let e = find(&state, &name).await?;
    let d = find_deployment(&state, &name, &deployment).await?;
    let names = user_names(&state).await?;
    Ok(Json(
        deployment_view(&state, &caller, &d, &e, &names).await?,
    ))
}

async fn update_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, deployment)): Path<(String, String)>,
    Json(req): Json<UpdateDeployment>,
) -> ApiResult<Json<DeploymentView>> {
    let e = modifiable(&state, &caller, &name).await?;
    let mut d = find_deployment(&state, &name, &deployment).await?;
    let scale = check_scale(
        req.instances,
        req.min_instances,
        req.max_instances,
        req.target_concurrency,
        Some(&d),
    )?;
    if let Some(flow) = &req.flow {
        let (flow_ref, flow_dir) = deployable(&state, &caller, flow).await?;
        d.flow_ref = flow_ref;
        d.flow_dir = flow_dir;
    }
    d.instances = scale.instances;
    d.min_instances = scale.min;
    d.max_instances = scale.max;
    d.target_concurrency = scale.target;
    if let Some(r) = check_sample_rate(req.sample_rate)? {
        d.sample_rate = r;
    }
    if let Some(r) = req.redact_payloads {
        d.redact_payloads = r;
    }
    state.store.update_deployment(&d).await?;
    state.serving.wake.notify_one();
    let d = find_deployment(&state, &name, &deployment).await?;
    let names = user_names(&state).await?;
    Ok(Json(
        deployment_view(&state, &caller, &d, &e, &names).await?,
    ))
}

async fn delete_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, deployment)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let e = modifiable(&state, &caller, &name).await?;
    find_deployment(&state, &name, &deployment).await?;
    if e.traffic.get(&deployment).is_some_and(|p| *p > 0) && e.traffic.len() > 1 {
        return Err(ApiErr::conflict(format!(
            "deployment '{deployment}' takes {}% of endpoint '{name}''s traffic; move it first: `flowrt endpoint update {name} --traffic OTHER=100`",
            e.traffic[&deployment]
        )));
    }
    let mut traffic = e.traffic.clone();
    traffic.shift_remove(&deployment);
    state
        .store
        .update_endpoint(&name, &traffic, e.retention_days)
        .await?;
    state.store.delete_deployment(&name, &deployment).await?;
    state.serving.wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RequestQuery {
    deployment: Option<String>,
    /// `ok` or `error`.
    status: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

fn request_view(r: &ScoreRow) -> ScoreRequestView {
    ScoreRequestView {
        id: r.id.clone(),
        deployment: r.deployment.clone(),
        session_id: r.session_id.clone(),
        started: r.started,
        latency_ms: r.latency_ms,
        status: r.status,
        error: r.error.clone(),
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        total_tokens: r.total_tokens,
        streamed: r.streamed,
        sampled: r.sampled,
    }
}

async fn list_requests(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<RequestQuery>,
) -> ApiResult<Json<Vec<ScoreRequestView>>> {
    find(&state, &name).await?;
    state.serving.recorded().await;
    let failed = match q.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some("ok") => Some(false),
        Some("error") => Some(true),
        Some(other) => {
            return Err(ApiErr::bad_request(format!(
                "status is '{other}': filter by ok, error or all"
            )))
        }
    };
    let rows = state
        .store
        .list_score_rows(
            &name,
            &ScoreFilter {
                deployment: q.deployment.filter(|d| !d.is_empty()),
                failed,
                before: q.before,
                since: None,
                limit: q.limit.unwrap_or(100).clamp(1, 1000),
            },
        )
        .await?;
    Ok(Json(rows.iter().map(request_view).collect()))
}

async fn show_request(
    State(state): State<AppState>,
    _caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<ScoreRequestDetail>> {
    state.serving.recorded().await;
    let row = state.store.get_score_row(&name, &id).await?.ok_or_else(|| {
        ApiErr::not_found(format!(
            "endpoint '{name}' has no request '{id}' (requests are kept for the endpoint's retention days)"
        ))
    })?;
    let detail: Value = row
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    let some = |v: &Value| (!v.is_null()).then(|| v.clone());
    Ok(Json(ScoreRequestDetail {
        request: request_view(&row),
        inputs: some(&detail["inputs"]),
        outputs: some(&detail["outputs"]),
        nodes: serde_json::from_value(detail["nodes"].clone()).unwrap_or_default(),
        node_runs: detail["node_runs"].as_array().cloned().unwrap_or_default(),
        duration: detail["duration"].as_f64().unwrap_or(0.0),
        spans: detail["spans"].as_array().cloned().unwrap_or_default(),
    }))
}

#[derive(Deserialize)]
struct StatsQuery {
    /// The window, in minutes back from now; default 60.
    minutes: Option<u64>,
    deployment: Option<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn stats(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Json<EndpointStats>> {
    find(&state, &name).await?;
    state.serving.recorded().await;
    let minutes = q.minutes.unwrap_or(60).clamp(1, 7 * 24 * 60);
    let window_ms = i64::try_from(minutes * 60_000).unwrap_or(i64::MAX);
    let now = crate::now_ms();
    let since = now - window_ms;
    // About sixty buckets over the window, at least a second each.
    let bucket_s = (minutes * 60 / 60).max(1);
    let bucket_ms = i64::try_from(bucket_s * 1000).unwrap_or(1000);
    let rows = state
        .store
        .list_score_rows(
            &name,
            &ScoreFilter {
                deployment: q.deployment.filter(|d| !d.is_empty()),
                failed: None,
                before: None,
                since: Some(since),
                limit: 200_000,
            },
        )
        .await?;
    let mut buckets: std::collections::BTreeMap<i64, (StatsBucket, Vec<f64>)> = Default::default();
    let mut all = Vec::with_capacity(rows.len());
    let (mut errors, mut tokens) = (0u64, 0u64);
    for r in &rows {
        let start = (r.started - since) / bucket_ms * bucket_ms + since;
        let (b, latencies) = buckets.entry(start).or_default();
        b.start = start;
        b.requests += 1;
        b.tokens += r.total_tokens;
        if r.status >= 400 {
            b.errors += 1;
            errors += 1;
        }
        tokens += r.total_tokens;
        latencies.push(r.latency_ms);
        all.push(r.latency_ms);
    }
    let mut out = Vec::new();
    for (_, (mut b, mut latencies)) in buckets {
        latencies.sort_by(f64::total_cmp);
        b.p50_ms = percentile(&latencies, 0.5);
        b.p99_ms = percentile(&latencies, 0.99);
        out.push(b);
    }
    all.sort_by(f64::total_cmp);
    // Requests per second over the span the requests cover (not the empty part of the window).
    let span_s = match (rows.last(), rows.first()) {
        (Some(oldest), Some(_)) => ((now - oldest.started) as f64 / 1000.0).max(1.0),
        _ => 1.0,
    };
    Ok(Json(EndpointStats {
        window_s: minutes * 60,
        bucket_s,
        buckets: out,
        requests: rows.len() as u64,
        errors,
        requests_per_s: rows.len() as f64 / span_s,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        tokens,
        dropped: state.serving.dropped_records.load(Ordering::Relaxed),
    }))
}
