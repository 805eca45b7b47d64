//! Work shared between servers through the database: which server manages each session (a
//! renewable lease), and runs spread over several sessions, whose lines are cut into chunks that
//! servers claim with a lease and complete with the claim they hold.
//!
//! Exactly once: a chunk's result is kept only by the completion that names the chunk's current
//! claim (`attempt`, a fencing token), so a server whose lease ran out and whose chunk was
//! claimed again cannot also complete it. A server that dies stops renewing; when its leases
//! end, the chunks it held are claimed again by the others. On Postgres claims skip rows another
//! transaction has locked (`FOR UPDATE SKIP LOCKED`), so servers never wait on each other; SQLite
//! has one writer at a time, so its single-statement claim is atomic as it is.

use crate::control::{db, get, now_ms, to_i64, Store};
use crate::error::StoreError;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

/// A run spread over several sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpreadRun {
    /// The session whose folder holds the run's record.
    pub session_id: String,
    pub name: String,
    pub owner: String,
    /// Every session that runs its chunks (the record's session first).
    pub sessions: Vec<String>,
    /// The batch request each chunk runs (JSON).
    pub request: serde_json::Value,
    pub total: u64,
    /// `Running`, `Completed`, `Failed` or `Canceled`.
    pub status: String,
    pub error: Option<String>,
    pub created: i64,
}

/// One claimed piece of a spread run: lines `first..end` (or, `seq == -1`, the gathering step).
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkClaim {
    pub id: i64,
    pub seq: i64,
    pub first: u64,
    pub end: u64,
    /// The claim's number: [`Store::complete_chunk`] must name it.
    pub attempt: i64,
}

impl ChunkClaim {
    /// Whether this is the step that gathers the chunks and records the run.
    pub fn is_gathering(&self) -> bool {
        self.seq < 0
    }
}

/// How far a spread run is: chunks and lines done, and who ran them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpreadProgress {
    pub chunks: u64,
    pub chunks_done: u64,
    pub lines_done: u64,
}

impl Store {
    // ---- session management ----

    /// Make `holder` the manager of session `id` until `until` (Unix ms) if no other server
    /// holds a live lease on it. Whether `holder` manages it now.
    pub async fn claim_session(
        &self,
        id: &str,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET manager = $1, manager_lease = $2
             WHERE id = $3 AND (manager IS NULL OR manager = $4 OR manager_lease IS NULL
                                OR manager_lease < $5)",
        )
        .bind(holder)
        .bind(until)
        .bind(id)
        .bind(holder)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot claim session {id}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Extend every lease `holder` holds (its sessions and its claimed chunks) to `until`.
    pub async fn renew_leases(&self, holder: &str, until: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET manager_lease = $1 WHERE manager = $2")
            .bind(until)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(db("cannot renew session leases"))?;
        sqlx::query(
            "UPDATE run_chunks SET lease_until = $1 WHERE holder = $2 AND state = 'claimed'",
        )
        .bind(until)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(db("cannot renew chunk leases"))?;
        Ok(())
    }

    /// Give up managing session `id` (a server stopping cleanly hands its sessions on at once).
    pub async fn release_session(&self, id: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET manager = NULL, manager_lease = NULL
             WHERE id = $1 AND manager = $2",
        )
        .bind(id)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(db(format!("cannot release session {id}")))?;
        Ok(())
    }

    // ---- spread runs ----

    /// Record a spread run and cut its `total` lines into chunks of `chunk` lines (plus the
    /// gathering step), all to do. Fails with [`StoreError::Exists`] if the run exists.
    pub async fn create_spread_run(&self, run: &SpreadRun, chunk: u64) -> Result<(), StoreError> {
        let action = || format!("cannot record spread run `{}`", run.name);
        let mut tx = self.pool.begin().await.map_err(db(action()))?;
        sqlx::query(
            "INSERT INTO spread_runs (session_id, name, owner, sessions, request, total, status,
                                      created)
             VALUES ($1, $2, $3, $4, $5, $6, 'Running', $7)",
        )
        .bind(&run.session_id)
        .bind(&run.name)
        .bind(&run.owner)
        .bind(serde_json::to_string(&run.sessions).unwrap_or_default())
        .bind(run.request.to_string())
        .bind(to_i64(run.total))
        .bind(run.created)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if crate::control::is_unique_violation(&e) {
                StoreError::Exists {
                    what: "run",
                    name: run.name.clone(),
                }
            } else {
                StoreError::Db {
                    action: action(),
                    source: e,
                }
            }
        })?;
        let chunk = chunk.max(1);
        let mut pieces: Vec<(i64, u64, u64)> = (0..run.total.div_ceil(chunk))
            .map(|i| {
                let first = i * chunk;
                (to_i64(i), first, (first + chunk).min(run.total))
            })
            .collect();
        pieces.push((-1, 0, 0));
        for (seq, first, end) in pieces {
            sqlx::query(
                "INSERT INTO run_chunks (session_id, name, seq, first_line, end_line, state)
                 VALUES ($1, $2, $3, $4, $5, 'todo')",
            )
            .bind(&run.session_id)
            .bind(&run.name)
            .bind(seq)
            .bind(to_i64(first))
            .bind(to_i64(end))
            .execute(&mut *tx)
            .await
            .map_err(db(action()))?;
        }
        tx.commit().await.map_err(db(action()))?;
        Ok(())
    }

    pub async fn get_spread_run(
        &self,
        session_id: &str,
        name: &str,
    ) -> Result<Option<SpreadRun>, StoreError> {
        let row = sqlx::query(&format!(
            "{SPREAD_SELECT} WHERE session_id = $1 AND name = $2"
        ))
        .bind(session_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read a spread run"))?;
        row.map(|r| spread_from(&r)).transpose()
    }

    /// The spread runs still running, oldest first.
    pub async fn running_spread_runs(&self) -> Result<Vec<SpreadRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SPREAD_SELECT} WHERE status = 'Running' ORDER BY created, name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list spread runs"))?;
        rows.iter().map(spread_from).collect()
    }

    /// End a spread run (`Completed`, `Failed`, `Canceled`): nothing more of it is claimed.
    pub async fn finish_spread_run(
        &self,
        session_id: &str,
        name: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE spread_runs SET status = $1, error = $2
             WHERE session_id = $3 AND name = $4 AND status = 'Running'",
        )
        .bind(status)
        .bind(error)
        .bind(session_id)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db("cannot end a spread run"))?;
        Ok(())
    }

    /// Claim the next chunk of a running spread run for `executor` (a session) on behalf of
    /// server `holder` until `until`: the first chunk to do, or one whose lease ran out; once
    /// every chunk is done, the gathering step. `None` when there is nothing to claim now.
    ///
    /// A chunk whose lease ended is claimed again only if it ended before `stale_before`: the
    /// grace in between lets the server that takes over the chunk's session adopt the chunk run
    /// still going there ([`Store::adopt_chunk`]) rather than run its lines twice. The gathering
    /// step is claimed only for the run's own session, unless `any_gatherer` (that session is
    /// gone: another gathers, and its server moves the run's folder into the run's session).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_chunk(
        &self,
        session_id: &str,
        name: &str,
        holder: &str,
        executor: &str,
        until: i64,
        stale_before: i64,
        any_gatherer: bool,
    ) -> Result<Option<ChunkClaim>, StoreError> {
        let lock = self.backend.skip_locked();
        // A chunk: to do, or claimed under a lease that has ended. The gathering step only when
        // no line chunk is left undone.
        let sql = format!(
            "UPDATE run_chunks SET state = 'claimed', holder = $1, executor = $2,
                    lease_until = $3, attempt = attempt + 1
             WHERE id = (
                SELECT c.id FROM run_chunks c
                WHERE c.session_id = $4 AND c.name = $5
                  AND (c.state = 'todo' OR (c.state = 'claimed' AND c.lease_until < $6))
                  AND EXISTS (SELECT 1 FROM spread_runs r WHERE r.session_id = c.session_id
                              AND r.name = c.name AND r.status = 'Running')
                  AND (c.seq >= 0 OR ((c.session_id = $2 OR $7) AND NOT EXISTS (
                        SELECT 1 FROM run_chunks o WHERE o.session_id = c.session_id
                          AND o.name = c.name AND o.seq >= 0 AND o.state <> 'done')))
                ORDER BY c.seq < 0, c.seq
                LIMIT 1 {lock})
             RETURNING id, seq, first_line, end_line, attempt"
        );
        let row = sqlx::query(&sql)
            .bind(holder)
            .bind(executor)
            .bind(until)
            .bind(session_id)
            .bind(name)
            .bind(stale_before.min(now_ms()))
            .bind(any_gatherer)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot claim a chunk of run `{name}`")))?;
        row.map(|r| claim_from(&r)).transpose()
    }

    /// Take over a chunk that session `executor` was running for a server whose lease ended
    /// (it died): `holder` now holds it, with the same claim, and waits for its chunk run.
    pub async fn adopt_chunk(
        &self,
        session_id: &str,
        name: &str,
        holder: &str,
        executor: &str,
        until: i64,
    ) -> Result<Option<ChunkClaim>, StoreError> {
        let lock = self.backend.skip_locked();
        let sql = format!(
            "UPDATE run_chunks SET holder = $1, lease_until = $2
             WHERE id = (
                SELECT id FROM run_chunks
                WHERE session_id = $3 AND name = $4 AND executor = $5 AND state = 'claimed'
                  AND (holder = $6 OR lease_until < $7)
                ORDER BY seq LIMIT 1 {lock})
             RETURNING id, seq, first_line, end_line, attempt"
        );
        let row = sqlx::query(&sql)
            .bind(holder)
            .bind(until)
            .bind(session_id)
            .bind(name)
            .bind(executor)
            .bind(holder)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("cannot take over a chunk of run `{name}`")))?;
        row.map(|r| claim_from(&r)).transpose()
    }
}

fn claim_from(r: &AnyRow) -> Result<ChunkClaim, StoreError> {
    {
        let number = |column: &'static str| -> Result<u64, StoreError> {
            let v: i64 = get(r, column)?;
            u64::try_from(v).map_err(|_| StoreError::BadValue {
                table: "run_chunks",
                column,
                value: v.to_string(),
            })
        };
        Ok(ChunkClaim {
            id: get(r, "id")?,
            seq: get(r, "seq")?,
            first: number("first_line")?,
            end: number("end_line")?,
            attempt: get(r, "attempt")?,
        })
    }
}

impl Store {
    /// Complete a claimed chunk with its line records. `false` (and nothing kept) when the claim
    /// is no longer this one: the lease ran out and the chunk was claimed again.
    pub async fn complete_chunk(
        &self,
        claim: &ChunkClaim,
        holder: &str,
        result: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE run_chunks SET state = 'done', result = $1, lease_until = NULL
             WHERE id = $2 AND holder = $3 AND attempt = $4 AND state = 'claimed'",
        )
        .bind(result)
        .bind(claim.id)
        .bind(holder)
        .bind(claim.attempt)
        .execute(&self.pool)
        .await
        .map_err(db("cannot complete a chunk"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Complete the first lines of a claimed chunk, `claim.first..done_until`, with their records,
    /// and put the rest back as a new chunk to do: what a session lost mid-chunk had finished
    /// is kept, not run again. `false` when the claim is no longer this one.
    pub async fn split_chunk(
        &self,
        claim: &ChunkClaim,
        holder: &str,
        done_until: u64,
        result: &str,
    ) -> Result<bool, StoreError> {
        let action = "cannot keep a chunk's finished lines";
        let mut tx = self.pool.begin().await.map_err(db(action))?;
        let done = sqlx::query(
            "UPDATE run_chunks SET state = 'done', result = $1, lease_until = NULL, end_line = $2
             WHERE id = $3 AND holder = $4 AND attempt = $5 AND state = 'claimed'",
        )
        .bind(result)
        .bind(to_i64(done_until))
        .bind(claim.id)
        .bind(holder)
        .bind(claim.attempt)
        .execute(&mut *tx)
        .await
        .map_err(db(action))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO run_chunks (session_id, name, seq, first_line, end_line, state)
             SELECT session_id, name,
                    (SELECT MAX(seq) + 1 FROM run_chunks o
                     WHERE o.session_id = c.session_id AND o.name = c.name),
                    $1, $2, 'todo'
             FROM run_chunks c WHERE c.id = $3",
        )
        .bind(to_i64(done_until))
        .bind(to_i64(claim.end))
        .bind(claim.id)
        .execute(&mut *tx)
        .await
        .map_err(db(action))?;
        tx.commit().await.map_err(db(action))?;
        Ok(true)
    }

    /// Hand a claimed chunk back (its session could not run it): it is to do again at once.
    pub async fn release_chunk(&self, claim: &ChunkClaim, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE run_chunks SET state = 'todo', holder = NULL, executor = NULL,
                    lease_until = NULL
             WHERE id = $1 AND holder = $2 AND attempt = $3 AND state = 'claimed'",
        )
        .bind(claim.id)
        .bind(holder)
        .bind(claim.attempt)
        .execute(&self.pool)
        .await
        .map_err(db("cannot release a chunk"))?;
        Ok(())
    }

    /// The done chunks' line records of a spread run, in line order (JSONL, chunk after chunk).
    pub async fn chunk_results(
        &self,
        session_id: &str,
        name: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT result FROM run_chunks
             WHERE session_id = $1 AND name = $2 AND seq >= 0 AND state = 'done'
             ORDER BY first_line",
        )
        .bind(session_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(db(format!("cannot read the chunks of run `{name}`")))?;
        rows.iter()
            .map(|r| get::<Option<String>>(r, "result").map(Option::unwrap_or_default))
            .collect()
    }

    /// How far a spread run is.
    pub async fn spread_progress(
        &self,
        session_id: &str,
        name: &str,
    ) -> Result<SpreadProgress, StoreError> {
        let row = sqlx::query(
            // Postgres sums integers as numeric, which the Any driver does not read: cast back.
            "SELECT COUNT(*) AS chunks,
                    CAST(COALESCE(SUM(CASE WHEN state = 'done' THEN 1 ELSE 0 END), 0) AS BIGINT)
                        AS chunks_done,
                    CAST(COALESCE(SUM(CASE WHEN state = 'done' THEN end_line - first_line
                                      ELSE 0 END), 0) AS BIGINT) AS lines_done
             FROM run_chunks WHERE session_id = $1 AND name = $2 AND seq >= 0",
        )
        .bind(session_id)
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map_err(db(format!("cannot read the progress of run `{name}`")))?;
        let n = |column: &'static str| -> Result<u64, StoreError> {
            let v: i64 = get(&row, column)?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        Ok(SpreadProgress {
            chunks: n("chunks")?,
            chunks_done: n("chunks_done")?,
            lines_done: n("lines_done")?,
        })
    }
}

const SPREAD_SELECT: &str = "SELECT session_id, name, owner, sessions, request, total, status,
    error, created FROM spread_runs";

fn spread_from(r: &AnyRow) -> Result<SpreadRun, StoreError> {
    let bad = |column: &'static str, value: String| StoreError::BadValue {
        table: "spread_runs",
        column,
        value,
    };
    let sessions: String = get(r, "sessions")?;
    let request: String = get(r, "request")?;
    let total: i64 = get(r, "total")?;
    Ok(SpreadRun {
        session_id: get(r, "session_id")?,
        name: get(r, "name")?,
        owner: get(r, "owner")?,
        sessions: serde_json::from_str(&sessions).map_err(|_| bad("sessions", sessions.clone()))?,
        request: serde_json::from_str(&request).map_err(|_| bad("request", request.clone()))?,
        total: u64::try_from(total).map_err(|_| bad("total", total.to_string()))?,
        status: get(r, "status")?,
        error: get(r, "error")?,
        created: get(r, "created")?,
    })
}
