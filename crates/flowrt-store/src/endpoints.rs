//! Endpoints and deployments as workspace records: an endpoint (its two keys kept as sha256
//! only, its traffic split), the deployments behind it (a flow version and how many sessions
//! serve it), the sessions that are its instances (one row per revision and slot, so servers
//! sharing the database never start two for one slot), and one row per scoring request (what
//! the dashboard counts, and for sampled requests the trace).

use crate::control::{db, exists_or, get, now_ms, random_bytes, token_hash, Store};
use crate::error::StoreError;
use indexmap::IndexMap;
use sqlx::any::AnyRow;

/// Prefix of every endpoint key (user tokens start with `frt_`).
pub const ENDPOINT_KEY_PREFIX: &str = "fre_";

/// An endpoint as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub name: String,
    /// The user id that made it.
    pub owner: String,
    pub primary_key_sha256: String,
    pub secondary_key_sha256: String,
    /// Deployment → percent of the requests that name none.
    pub traffic: IndexMap<String, u32>,
    /// Days scoring requests are kept.
    pub retention_days: u32,
    pub created: i64,
    pub updated: i64,
}

impl Endpoint {
    /// Does `key` open this endpoint (either of its keys)?
    pub fn accepts_key(&self, key: &str) -> bool {
        let hash = token_hash(key);
        constant_time_eq(&hash, &self.primary_key_sha256)
            | constant_time_eq(&hash, &self.secondary_key_sha256)
    }
}

/// The sha256 an endpoint keeps of `key`.
pub fn endpoint_key_hash(key: &str) -> String {
    token_hash(key)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A deployment as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    pub endpoint: String,
    pub name: String,
    /// The user id that made it: its instances are that user's sessions, with that user's
    /// connections.
    pub owner: String,
    /// `NAME@vN`.
    pub flow_ref: String,
    /// The flow version's snapshot, as sessions record it.
    pub flow_dir: String,
    /// Grows each time the deployment moves to another flow version.
    pub revision: i64,
    /// Instances wanted now (between `min_instances` and `max_instances` when it scales).
    pub instances: u32,
    pub min_instances: u32,
    pub max_instances: u32,
    /// Concurrent requests an instance should carry; above it, the deployment grows.
    pub target_concurrency: u32,
    /// `small`, `medium`, ...
    pub size: String,
    /// The share of requests whose trace (inputs, outputs, nodes, spans) is kept.
    pub sample_rate: f64,
    /// Keep traces without inputs and outputs.
    pub redact_payloads: bool,
    pub created: i64,
    pub updated: i64,
}

/// A session serving a deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentInstance {
    pub endpoint: String,
    pub deployment: String,
    pub revision: i64,
    pub slot: u32,
    pub session_id: String,
    pub created: i64,
}

/// One scoring request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreRow {
    pub id: String,
    pub endpoint: String,
    pub deployment: String,
    pub session_id: String,
    /// Unix ms.
    pub started: i64,
    pub latency_ms: f64,
    /// The HTTP status answered.
    pub status: u16,
    pub error: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub streamed: bool,
    /// JSON: inputs, outputs, nodes and spans, for a sampled request (read by
    /// [`Store::get_score_row`] only).
    pub detail: Option<String>,
    /// It has a detail (its trace was kept).
    pub sampled: bool,
}

/// What a list of requests is narrowed to.
#[derive(Clone, Debug, Default)]
pub struct ScoreFilter {
    pub deployment: Option<String>,
    /// Only failed (status ≥ 400) or only succeeded requests.
    pub failed: Option<bool>,
    /// Requests that started before this (Unix ms), for paging.
    pub before: Option<i64>,
    pub since: Option<i64>,
    pub limit: u32,
}

fn flag(r: &AnyRow, column: &'static str) -> Result<bool, StoreError> {
    match sqlx::Row::try_get::<bool, _>(r, column) {
        Ok(b) => Ok(b),
        Err(_) => Ok(get::<i64>(r, column)? != 0),
    }
}

fn count(r: &AnyRow, column: &'static str) -> Result<u32, StoreError> {
    Ok(u32::try_from(get::<i64>(r, column)?.max(0)).unwrap_or(u32::MAX))
}

const ENDPOINT_COLUMNS: &str = "name, owner, primary_key_sha256, secondary_key_sha256, traffic, retention_days, created, updated";

fn endpoint_from(r: &AnyRow) -> Result<Endpoint, StoreError> {
    let traffic: String = get(r, "traffic")?;
    Ok(Endpoint {
        name: get(r, "name")?,
        owner: get(r, "owner")?,
        primary_key_sha256: get(r, "primary_key_sha256")?,
        secondary_key_sha256: get(r, "secondary_key_sha256")?,
        traffic: serde_json::from_str(&traffic).unwrap_or_default(),
        retention_days: count(r, "retention_days")?,
        created: get(r, "created")?,
        updated: get(r, "updated")?,
    })
}

const DEPLOYMENT_COLUMNS: &str = "endpoint, name, owner, flow_ref, flow_dir, revision, instances, min_instances, max_instances, target_concurrency, size, sample_rate, redact_payloads, created, updated";

fn deployment_from(r: &AnyRow) -> Result<Deployment, StoreError> {
    Ok(Deployment {
        endpoint: get(r, "endpoint")?,
        name: get(r, "name")?,
        owner: get(r, "owner")?,
        flow_ref: get(r, "flow_ref")?,
        flow_dir: get(r, "flow_dir")?,
        revision: get(r, "revision")?,
        instances: count(r, "instances")?,
        min_instances: count(r, "min_instances")?,
        max_instances: count(r, "max_instances")?,
        target_concurrency: count(r, "target_concurrency")?,
        size: get(r, "size")?,
        sample_rate: get(r, "sample_rate")?,
        redact_payloads: flag(r, "redact_payloads")?,
        created: get(r, "created")?,
        updated: get(r, "updated")?,
    })
}

fn instance_from(r: &AnyRow) -> Result<DeploymentInstance, StoreError> {
    Ok(DeploymentInstance {
        endpoint: get(r, "endpoint")?,
        deployment: get(r, "deployment")?,
        revision: get(r, "revision")?,
        slot: count(r, "slot")?,
        session_id: get(r, "session_id")?,
        created: get(r, "created")?,
    })
}

const SCORE_COLUMNS: &str = "id, endpoint, deployment, session_id, started, latency_ms, status, error, prompt_tokens, completion_tokens, total_tokens, streamed, detail";
/// A list's columns: the detail's presence, not the detail.
const SCORE_LIST_COLUMNS: &str = "id, endpoint, deployment, session_id, started, latency_ms, status, error, prompt_tokens, completion_tokens, total_tokens, streamed, CASE WHEN detail IS NULL THEN 0 ELSE 1 END AS sampled";

fn score_from(r: &AnyRow, with_detail: bool) -> Result<ScoreRow, StoreError> {
    let tokens = |c| -> Result<u64, StoreError> { Ok(get::<i64>(r, c)?.max(0) as u64) };
    Ok(ScoreRow {
        id: get(r, "id")?,
        endpoint: get(r, "endpoint")?,
        deployment: get(r, "deployment")?,
        session_id: get(r, "session_id")?,
        started: get(r, "started")?,
        latency_ms: get(r, "latency_ms")?,
        status: u16::try_from(get::<i64>(r, "status")?).unwrap_or(500),
        error: get(r, "error")?,
        prompt_tokens: tokens("prompt_tokens")?,
        completion_tokens: tokens("completion_tokens")?,
        total_tokens: tokens("total_tokens")?,
        streamed: flag(r, "streamed")?,
        detail: if with_detail { get(r, "detail")? } else { None },
        sampled: if with_detail {
            get::<Option<String>>(r, "detail")?.is_some()
        } else {
            get::<i64>(r, "sampled")? != 0
        },
    })
}

/// A fresh endpoint key.
fn new_endpoint_key() -> Result<String, StoreError> {
    Ok(format!(
        "{ENDPOINT_KEY_PREFIX}{}",
        hex::encode(random_bytes::<32>()?)
    ))
}

impl Store {
    /// Make endpoint `name` owned by `owner`; returns it and its two keys in plain text, which
    /// are kept nowhere (only their sha256 is). A name in use is [`StoreError::Exists`].
    pub async fn create_endpoint(
        &self,
        name: &str,
        owner: &str,
        retention_days: u32,
    ) -> Result<(Endpoint, String, String), StoreError> {
        let (primary, secondary) = (new_endpoint_key()?, new_endpoint_key()?);
        let now = now_ms();
        sqlx::query(&format!(
            "INSERT INTO endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
        ))
        .bind(name)
        .bind(owner)
        .bind(token_hash(&primary))
        .bind(token_hash(&secondary))
        .bind("{}")
        .bind(i64::from(retention_days))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            exists_or(e, "endpoint", name, || {
                format!("cannot create endpoint `{name}`")
            })
        })?;
        let endpoint = self
            .get_endpoint(name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "endpoint",
                name: name.to_string(),
            })?;
        Ok((endpoint, primary, secondary))
    }

    pub async fn get_endpoint(&self, name: &str) -> Result<Option<Endpoint>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read an endpoint"))?;
        row.map(|r| endpoint_from(&r)).transpose()
    }

    /// Every endpoint, by name.
    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list endpoints"))?;
        rows.iter().map(endpoint_from).collect()
    }

    /// Set an endpoint's traffic split and retention. Whether it exists.
    pub async fn update_endpoint(
        &self,
        name: &str,
        traffic: &IndexMap<String, u32>,
        retention_days: u32,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE endpoints SET traffic = $1, retention_days = $2, updated = $3 WHERE name = $4",
        )
        .bind(serde_json::to_string(traffic).unwrap_or_else(|_| "{}".into()))
        .bind(i64::from(retention_days))
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot update endpoint `{name}`")))?;
        Ok(done.rows_affected() > 0)
    }

    /// Replace one of an endpoint's keys (`secondary`, else the primary); returns the new key in
    /// plain text, or `None` when the endpoint does not exist.
    pub async fn regenerate_endpoint_key(
        &self,
        name: &str,
        secondary: bool,
    ) -> Result<Option<String>, StoreError> {
        let key = new_endpoint_key()?;
        let column = if secondary {
            "secondary_key_sha256"
        } else {
            "primary_key_sha256"
        };
        let done = sqlx::query(&format!(
            "UPDATE endpoints SET {column} = $1, updated = $2 WHERE name = $3"
        ))
        .bind(token_hash(&key))
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot replace a key of endpoint `{name}`")))?;
        Ok((done.rows_affected() > 0).then_some(key))
    }

    /// Delete an endpoint with its deployments and its requests. Its instances' rows stay: the
    /// supervisor finds their deployments gone, drains and stops their sessions, then forgets
    /// them. Whether it existed.
    pub async fn delete_endpoint(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot delete an endpoint"))?;
        for table in ["deployments", "endpoint_requests"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE endpoint = $1"))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db(format!("cannot delete endpoint `{name}`")))?;
        }
        let done = sqlx::query("DELETE FROM endpoints WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db(format!("cannot delete endpoint `{name}`")))?;
        tx.commit()
            .await
            .map_err(db(format!("cannot delete endpoint `{name}`")))?;
        Ok(done.rows_affected() > 0)
    }

    /// Record a new deployment (revision 1). A name in use on the endpoint is
    /// [`StoreError::Exists`].
    pub async fn create_deployment(&self, d: &Deployment) -> Result<Deployment, StoreError> {
        let now = now_ms();
        sqlx::query(&format!(
            "INSERT INTO deployments ({DEPLOYMENT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $9, $10, $11, $12, $13, $13)"
        ))
        .bind(&d.endpoint)
        .bind(&d.name)
        .bind(&d.owner)
        .bind(&d.flow_ref)
        .bind(&d.flow_dir)
        .bind(i64::from(d.instances))
        .bind(i64::from(d.min_instances))
        .bind(i64::from(d.max_instances))
        .bind(i64::from(d.target_concurrency))
        .bind(&d.size)
        .bind(d.sample_rate)
        .bind(d.redact_payloads)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            exists_or(e, "deployment", &d.name, || {
                format!("cannot create deployment `{}/{}`", d.endpoint, d.name)
            })
        })?;
        self.get_deployment(&d.endpoint, &d.name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "deployment",
                name: d.name.clone(),
            })
    }

    pub async fn get_deployment(
        &self,
        endpoint: &str,
        name: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE endpoint = $1 AND name = $2"
        ))
        .bind(endpoint)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read a deployment"))?;
        row.map(|r| deployment_from(&r)).transpose()
    }

    /// The deployments of `endpoint` (every endpoint's when `None`), by endpoint and name.
    pub async fn list_deployments(
        &self,
        endpoint: Option<&str>,
    ) -> Result<Vec<Deployment>, StoreError> {
        let rows = match endpoint {
            Some(e) => {
                sqlx::query(&format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE endpoint = $1 ORDER BY name"
            ))
                .bind(e)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY endpoint, name"
                ))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db("cannot list deployments"))?;
        rows.iter().map(deployment_from).collect()
    }

    /// Save a deployment's settings; a new `flow_ref` starts its next revision. Whether it
    /// exists.
    pub async fn update_deployment(&self, d: &Deployment) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE deployments SET
               revision = CASE WHEN flow_ref = $1 AND flow_dir = $2 THEN revision ELSE revision + 1 END,
               flow_ref = $1, flow_dir = $2, instances = $3, min_instances = $4,
               max_instances = $5, target_concurrency = $6, size = $7, sample_rate = $8,
               redact_payloads = $9, updated = $10
             WHERE endpoint = $11 AND name = $12",
        )
        .bind(&d.flow_ref)
        .bind(&d.flow_dir)
        .bind(i64::from(d.instances))
        .bind(i64::from(d.min_instances))
        .bind(i64::from(d.max_instances))
        .bind(i64::from(d.target_concurrency))
        .bind(&d.size)
        .bind(d.sample_rate)
        .bind(d.redact_payloads)
        .bind(now_ms())
        .bind(&d.endpoint)
        .bind(&d.name)
        .execute(&self.pool)
        .await
        .map_err(db(format!(
            "cannot update deployment `{}/{}`",
            d.endpoint, d.name
        )))?;
        Ok(done.rows_affected() > 0)
    }

    /// Set how many instances a scaling deployment wants.
    pub async fn scale_deployment(
        &self,
        endpoint: &str,
        name: &str,
        instances: u32,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE deployments SET instances = $1 WHERE endpoint = $2 AND name = $3")
            .bind(i64::from(instances))
            .bind(endpoint)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot scale deployment `{endpoint}/{name}`")))?;
        Ok(())
    }

    /// Delete a deployment record (its instances' rows stay until their sessions are stopped).
    /// Whether it existed.
    pub async fn delete_deployment(&self, endpoint: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM deployments WHERE endpoint = $1 AND name = $2")
            .bind(endpoint)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db(format!("cannot delete deployment `{endpoint}/{name}`")))?;
        Ok(done.rows_affected() > 0)
    }

    /// Claim a slot of a deployment's revision for `session_id`; `false` when another server
    /// claimed it first.
    pub async fn claim_instance_slot(&self, i: &DeploymentInstance) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO deployment_instances (endpoint, deployment, revision, slot, session_id, created)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&i.endpoint)
        .bind(&i.deployment)
        .bind(i.revision)
        .bind(i64::from(i.slot))
        .bind(&i.session_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if crate::control::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(db("cannot record a deployment's instance")(e)),
        }
    }

    /// Every instance row (of every deployment, also of deleted ones not yet stopped).
    pub async fn list_instances(&self) -> Result<Vec<DeploymentInstance>, StoreError> {
        let rows = sqlx::query(
            "SELECT endpoint, deployment, revision, slot, session_id, created
             FROM deployment_instances ORDER BY endpoint, deployment, revision, slot",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list deployments' instances"))?;
        rows.iter().map(instance_from).collect()
    }

    /// Forget the instance that is session `session_id`. Whether it was one.
    pub async fn delete_instance(&self, session_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM deployment_instances WHERE session_id = $1")
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(db("cannot forget a deployment's instance"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Record scoring requests, in one transaction.
    pub async fn insert_score_rows(&self, rows: &[ScoreRow]) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot record scoring requests"))?;
        for r in rows {
            sqlx::query(&format!(
                "INSERT INTO endpoint_requests ({SCORE_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .bind(&r.id)
            .bind(&r.endpoint)
            .bind(&r.deployment)
            .bind(&r.session_id)
            .bind(r.started)
            .bind(r.latency_ms)
            .bind(i64::from(r.status))
            .bind(r.error.as_deref())
            .bind(crate::control::to_i64(r.prompt_tokens))
            .bind(crate::control::to_i64(r.completion_tokens))
            .bind(crate::control::to_i64(r.total_tokens))
            .bind(r.streamed)
            .bind(r.detail.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db("cannot record a scoring request"))?;
        }
        tx.commit()
            .await
            .map_err(db("cannot record scoring requests"))?;
        Ok(())
    }

    /// An endpoint's requests, newest first, without their detail.
    pub async fn list_score_rows(
        &self,
        endpoint: &str,
        filter: &ScoreFilter,
    ) -> Result<Vec<ScoreRow>, StoreError> {
        let mut sql =
            format!("SELECT {SCORE_LIST_COLUMNS} FROM endpoint_requests WHERE endpoint = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if filter.deployment.is_some() {
            sql.push_str(&format!(" AND deployment = ${}", next()));
        }
        if filter.before.is_some() {
            sql.push_str(&format!(" AND started < ${}", next()));
        }
        if filter.since.is_some() {
            sql.push_str(&format!(" AND started >= ${}", next()));
        }
        match filter.failed {
            Some(true) => sql.push_str(" AND status >= 400"),
            Some(false) => sql.push_str(" AND status < 400"),
            None => {}
        }
        sql.push_str(&format!(
            " ORDER BY started DESC LIMIT {}",
            filter.limit.max(1)
        ));
        let mut q = sqlx::query(&sql).bind(endpoint);
        if let Some(d) = &filter.deployment {
            q = q.bind(d);
        }
        if let Some(b) = filter.before {
            q = q.bind(b);
        }
        if let Some(s) = filter.since {
            q = q.bind(s);
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot list an endpoint's requests"))?;
        rows.iter().map(|r| score_from(r, false)).collect()
    }

    /// One request of an endpoint, with its detail.
    pub async fn get_score_row(
        &self,
        endpoint: &str,
        id: &str,
    ) -> Result<Option<ScoreRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SCORE_COLUMNS} FROM endpoint_requests WHERE endpoint = $1 AND id = $2"
        ))
        .bind(endpoint)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read a scoring request"))?;
        row.map(|r| score_from(&r, true)).transpose()
    }

    /// Forget an endpoint's requests older than `before` (Unix ms); how many went.
    pub async fn prune_score_rows(&self, endpoint: &str, before: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM endpoint_requests WHERE endpoint = $1 AND started < $2")
                .bind(endpoint)
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(db("cannot forget old scoring requests"))?;
        Ok(done.rows_affected())
    }

    /// Changes when any connection is made, replaced or deleted (servers sharing a database
    /// each poll it).
    pub async fn connections_fingerprint(&self) -> Result<(i64, i64), StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n, COALESCE(MAX(updated), 0) AS m FROM connections")
                .fetch_one(&self.pool)
                .await
                .map_err(db("cannot read the connections' state"))?;
        Ok((get(&row, "n")?, get(&row, "m")?))
    }
}
