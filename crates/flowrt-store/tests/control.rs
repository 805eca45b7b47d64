//! The control-plane store against real SQLite files in temp dirs, and every test again against
//! a fresh database on the PostgreSQL server `./scripts/test.sh` starts (`FLOWRT_TEST_POSTGRES`).

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_api::{PreparingPhase, SessionSize, SessionStatus};
use flowrt_store::{
    ComputeKind, ComputeStatus, NewSession, Role, RunKind, RunStatus, Store, StoreError, MASK,
};
use serde_json::json;

/// One backend a test runs on: its home folder, and its Postgres database if any.
struct Db {
    home: tempfile::TempDir,
    postgres: Option<String>,
}

impl Db {
    async fn open(&self) -> Store {
        match &self.postgres {
            Some(url) => Store::open_postgres(self.home.path(), url).await.unwrap(),
            None => Store::open(self.home.path()).await.unwrap(),
        }
    }

    /// Whether `needle` is anywhere at rest: a file under the home, or a row of the database.
    async fn holds(&self, needle: &str) -> bool {
        file_contains(self.home.path(), needle.as_bytes())
            || match &self.postgres {
                Some(url) => flowrt_store::testing::database_contains(url, needle)
                    .await
                    .unwrap(),
                None => false,
            }
    }
}

/// SQLite, and Postgres when the test server is there.
async fn backends() -> Vec<Db> {
    let mut all = vec![Db {
        home: tempfile::tempdir().unwrap(),
        postgres: None,
    }];
    if let Some(admin) = flowrt_store::testing::postgres_url() {
        all.push(Db {
            home: tempfile::tempdir().unwrap(),
            postgres: Some(flowrt_store::testing::fresh_database(&admin).await.unwrap()),
        });
    }
    all
}

/// A test body run once per backend.
macro_rules! on_every_backend {
    ($name:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for db in backends().await {
                let store = db.open().await;
                $body(&db, store).await;
            }
        }
    };
}

fn new_session(owner: &str) -> NewSession {
    NewSession {
        owner: owner.to_string(),
        flow_dir: "/flows/a".into(),
        flow_ref: Some("a@v1".into()),
        env_ref: "default@1.1.0".into(),
        env_key: None,
        base_version: "1.1.0".into(),
        size: SessionSize::Small,
        idle_timeout_s: 3600,
        identity: None,
        compute: None,
        shared: false,
    }
}

on_every_backend!(
    owner_is_created_once_and_tokens_resolve,
    owner_is_created_once_and_tokens_resolve_on
);
async fn owner_is_created_once_and_tokens_resolve_on(db: &Db, store: Store) {
    let token = store
        .ensure_owner()
        .await
        .unwrap()
        .expect("first call creates");
    assert!(
        token.starts_with("frt_") && token.len() == 4 + 64,
        "{token}"
    );
    assert_eq!(store.ensure_owner().await.unwrap(), None);
    let owner = store.user_by_token(&token).await.unwrap().unwrap();
    assert_eq!((owner.name.as_str(), owner.role), ("owner", Role::Owner));
    assert!(owner.id.starts_with("u-"));
    assert_eq!(store.user_by_token("frt_wrong").await.unwrap(), None);

    let (ada, ada_token) = store.create_user("ada", Role::Viewer).await.unwrap();
    assert_ne!(ada_token, token);
    assert_eq!(
        store.user_by_token(&ada_token).await.unwrap(),
        Some(ada.clone())
    );
    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["ada", "owner"]);
    match store.create_user("ada", Role::User).await {
        Err(StoreError::Exists { what: "user", name }) => assert_eq!(name, "ada"),
        other => panic!("{other:?}"),
    }
    // only the hash is stored
    store.close().await;
    assert!(!db.holds(&token).await);
    // a reopened store still knows the owner
    let store = db.open().await;
    assert_eq!(store.ensure_owner().await.unwrap(), None);
    assert_eq!(store.user_by_token(&token).await.unwrap(), Some(owner));
}

on_every_backend!(computes_round_trip, computes_round_trip_on);
async fn computes_round_trip_on(_db: &Db, store: Store) {
    let (ada, _) = store.create_user("ada", Role::User).await.unwrap();
    let c = store
        .create_compute("ci-1", ComputeKind::Instance, SessionSize::Medium, &ada.id)
        .await
        .unwrap();
    assert_eq!(c.status, ComputeStatus::Running);
    assert_eq!(
        store.get_compute(&ada.id, "ci-1").await.unwrap(),
        Some(c.clone())
    );
    assert!(matches!(
        store
            .create_compute("ci-1", ComputeKind::Serverless, SessionSize::Small, &ada.id)
            .await,
        Err(StoreError::Exists { .. })
    ));
    assert!(store
        .set_compute_status(&ada.id, "ci-1", ComputeStatus::Stopped)
        .await
        .unwrap());
    assert!(!store
        .set_compute_status(&ada.id, "nope", ComputeStatus::Stopped)
        .await
        .unwrap());
    let all = store.list_computes().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, ComputeStatus::Stopped);
    assert_eq!(all[0].size, SessionSize::Medium);
    assert!(store.delete_compute(&ada.id, "ci-1").await.unwrap());
    assert_eq!(store.get_compute(&ada.id, "ci-1").await.unwrap(), None);
    // an unknown owner is refused
    assert!(store
        .create_compute("ci-2", ComputeKind::Instance, SessionSize::Small, "u-ghost")
        .await
        .is_err());
}

on_every_backend!(sessions_round_trip, sessions_round_trip_on);
async fn sessions_round_trip_on(_db: &Db, store: Store) {
    let (ada, _) = store.create_user("ada", Role::User).await.unwrap();
    let (bob, _) = store.create_user("bob", Role::User).await.unwrap();
    let s = store.insert_session(&new_session(&ada.id)).await.unwrap();
    assert!(s.id.starts_with("s-") && s.id.len() == 14, "{}", s.id);
    assert_eq!(s.status, SessionStatus::NotAvailable);
    assert_eq!(store.get_session(&s.id).await.unwrap(), Some(s.clone()));
    let t = store.insert_session(&new_session(&bob.id)).await.unwrap();

    assert!(store
        .update_session_status(
            &s.id,
            SessionStatus::Preparing,
            Some(PreparingPhase::Installing),
            None
        )
        .await
        .unwrap());
    assert!(store
        .update_session_agent(&s.id, Some(4242), Some("127.0.0.1:9000"))
        .await
        .unwrap());
    assert!(store
        .update_session_settings(&s.id, SessionSize::Large, 0)
        .await
        .unwrap());
    assert!(store
        .update_session_env(&s.id, "myenv@v2", Some("abc"), "1.0.0")
        .await
        .unwrap());
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(store.touch_session(&s.id).await.unwrap());
    let got = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(got.status, SessionStatus::Preparing);
    assert_eq!(got.phase, Some(PreparingPhase::Installing));
    assert_eq!(got.agent_pid, Some(4242));
    assert_eq!(got.agent_addr.as_deref(), Some("127.0.0.1:9000"));
    assert_eq!((got.size, got.idle_timeout_s), (SessionSize::Large, 0));
    assert_eq!(
        (
            got.env_ref.as_str(),
            got.env_key.as_deref(),
            got.base_version.as_str()
        ),
        ("myenv@v2", Some("abc"), "1.0.0")
    );
    assert!(got.last_activity > s.last_activity);

    assert!(store
        .update_session_status(&s.id, SessionStatus::Failed, None, Some("agent exited"))
        .await
        .unwrap());
    assert!(store
        .set_session_log_tail(&s.id, Some("line 1\nline 2"))
        .await
        .unwrap());
    let got = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(
        (
            got.status,
            got.phase,
            got.reason.as_deref(),
            got.log_tail.as_deref()
        ),
        (
            SessionStatus::Failed,
            None,
            Some("agent exited"),
            Some("line 1\nline 2")
        )
    );

    let ids = |v: Vec<flowrt_store::Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_sessions(Some(&bob.id)).await.unwrap()),
        [t.id.as_str()]
    );
    assert_eq!(store.list_sessions(None).await.unwrap().len(), 2);
    assert!(store.delete_session(&s.id).await.unwrap());
    assert!(!store.delete_session(&s.id).await.unwrap());
    assert_eq!(store.get_session(&s.id).await.unwrap(), None);
    assert!(!store.touch_session(&s.id).await.unwrap());
}

on_every_backend!(
    environment_versions_count_up_per_name,
    environment_versions_count_up_per_name_on
);
async fn environment_versions_count_up_per_name_on(_db: &Db, store: Store) {
    assert_eq!(
        store
            .publish_environment("myenv", None, "1.0.0", "six\n")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .publish_environment("other", None, "1.1.0", "")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .publish_environment("myenv", None, "1.1.0", "six==1.16.0\n")
            .await
            .unwrap(),
        2
    );
    let latest = store.get_environment("myenv", None).await.unwrap().unwrap();
    assert_eq!(
        (latest.version, latest.reference()),
        (2, "myenv@v2".to_string())
    );
    assert_eq!(latest.requirements, "six==1.16.0\n");
    let v1 = store
        .get_environment("myenv", Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (v1.base_version.as_str(), v1.requirements.as_str()),
        ("1.0.0", "six\n")
    );
    assert_eq!(store.get_environment("myenv", Some(3)).await.unwrap(), None);
    assert_eq!(store.get_environment("ghost", None).await.unwrap(), None);
    let refs: Vec<_> = store
        .list_environments()
        .await
        .unwrap()
        .iter()
        .map(|e| e.reference())
        .collect();
    assert_eq!(refs, ["myenv@v1", "myenv@v2", "other@v1"]);
}

on_every_backend!(
    identity_feed_tokens_are_encrypted_at_rest,
    identity_feed_tokens_are_encrypted_at_rest_on
);
async fn identity_feed_tokens_are_encrypted_at_rest_on(db: &Db, store: Store) {
    let (ada, _) = store.create_user("ada", Role::User).await.unwrap();
    let secret = "feed-token-0123456789-very-secret";
    let entra_secret = "entra-client-secret-9876543210";
    let principal = flowrt_api::EntraServicePrincipal {
        tenant_id: "contoso.onmicrosoft.com".into(),
        client_id: "app-1".into(),
        client_secret: entra_secret.into(),
    };
    let id = store
        .create_identity(
            "builder",
            &ada.id,
            Some(secret),
            &["pkgs.example.com".to_string()],
            Some(&principal),
        )
        .await
        .unwrap();
    assert_eq!(id.feed_token.as_deref(), Some(MASK));
    assert_eq!(id.entra_client_id.as_deref(), Some("app-1"));
    store
        .create_identity("plain", &ada.id, None, &[], None)
        .await
        .unwrap();
    let listed = store.list_identities().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].feed_token.as_deref(), Some(MASK));
    assert_eq!(listed[1].feed_token, None);
    assert!(!format!("{listed:?}").contains(secret));
    assert!(!format!("{listed:?}").contains(entra_secret));
    assert_eq!(
        store.identity_entra_for_session("builder").await.unwrap(),
        Some(principal.clone())
    );
    assert_eq!(
        store.identity_entra_for_session("plain").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .identity_feed_token_for_install("builder")
            .await
            .unwrap()
            .as_deref(),
        Some(secret)
    );
    assert_eq!(
        store
            .identity_feed_token_for_install("plain")
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store.identity_feed_token_for_install("ghost").await,
        Err(StoreError::NotFound {
            what: "identity",
            ..
        })
    ));
    assert!(matches!(
        store
            .create_identity("builder", &ada.id, None, &[], None)
            .await,
        Err(StoreError::Exists { .. })
    ));
    store.close().await;
    assert!(!db.holds(secret).await);
    assert!(!db.holds(entra_secret).await);
}

on_every_backend!(
    runs_round_trip_and_unfinished_ones_are_listed,
    runs_round_trip_and_unfinished_ones_are_listed_on
);
async fn runs_round_trip_and_unfinished_ones_are_listed_on(_db: &Db, store: Store) {
    let req = json!({"flow": "/flows/a", "inputs": {"x": 1}});
    let a = store
        .insert_run("run-a", "s-1", RunKind::Batch, &req)
        .await
        .unwrap();
    assert_eq!((a.status, a.finished), (RunStatus::Queued, None));
    store
        .insert_run("run-b", "s-1", RunKind::Test, &json!({}))
        .await
        .unwrap();
    store
        .insert_run("run-c", "s-2", RunKind::Batch, &json!({}))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_run("run-a", "s-1", RunKind::Batch, &req).await,
        Err(StoreError::Exists { what: "run", .. })
    ));
    assert!(store
        .update_run("run-a", RunStatus::Running, None)
        .await
        .unwrap());
    assert!(store
        .update_run("run-b", RunStatus::Completed, Some(&json!({"out": 2})))
        .await
        .unwrap());
    let b = store.get_run("run-b").await.unwrap().unwrap();
    assert_eq!(b.result, Some(json!({"out": 2})));
    assert!(b.finished.is_some());
    let a = store.get_run("run-a").await.unwrap().unwrap();
    assert_eq!(
        (a.status, a.request.clone(), a.finished),
        (RunStatus::Running, req, None)
    );

    let ids = |v: Vec<flowrt_store::RunRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_runs("s-1").await.unwrap()),
        ["run-a", "run-b"]
    );
    assert_eq!(
        ids(store.list_unfinished_runs().await.unwrap()),
        ["run-a", "run-c"]
    );
}

on_every_backend!(
    workspace_runs_have_one_name_and_outlive_their_session,
    workspace_runs_have_one_name_and_outlive_their_session_on
);
async fn workspace_runs_have_one_name_and_outlive_their_session_on(_db: &Db, store: Store) {
    let ana = store.create_user("ana", Role::User).await.unwrap().0;
    let s = store.insert_session(&new_session(&ana.id)).await.unwrap();
    let record = json!({"name": "wc1", "status": "Running", "session": s.id});
    let run = store
        .insert_workspace_run("wc1", &ana.id, &s.id, &record)
        .await
        .unwrap();
    assert_eq!((run.status.as_str(), run.archived), ("Running", false));
    // One name in the workspace, whoever asks and whichever session.
    let bob = store.create_user("bob", Role::User).await.unwrap().0;
    assert!(matches!(
        store
            .insert_workspace_run("wc1", &bob.id, "s-other", &record)
            .await,
        Err(StoreError::Exists { what: "run", .. })
    ));
    store
        .insert_workspace_run(
            "wc1-eval",
            &ana.id,
            "s-other",
            &json!({"status": "Running"}),
        )
        .await
        .unwrap();
    let names =
        |v: Vec<flowrt_store::WorkspaceRun>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_running_workspace_runs().await.unwrap()),
        ["wc1", "wc1-eval"]
    );
    let done = json!({"name": "wc1", "status": "Completed", "session": s.id, "total_lines": 3});
    // Compare and set: a record replaces the stored one only from the status its writer saw.
    assert!(store
        .update_workspace_run_from("wc1", "Running", &done)
        .await
        .unwrap());
    let late = json!({"name": "wc1", "status": "Running", "session": s.id, "total_lines": 3});
    assert!(!store
        .update_workspace_run_from("wc1", "Running", &late)
        .await
        .unwrap());
    assert_eq!(
        store
            .get_workspace_run("wc1")
            .await
            .unwrap()
            .unwrap()
            .status,
        "Completed"
    );
    assert!(store.update_workspace_run("wc1", &done).await.unwrap());
    assert!(!store.update_workspace_run("ghost", &done).await.unwrap());
    assert_eq!(
        names(store.list_running_workspace_runs().await.unwrap()),
        ["wc1-eval"]
    );
    // Deleting the session that ran it leaves the run.
    assert!(store.delete_session(&s.id).await.unwrap());
    let kept = store.get_workspace_run("wc1").await.unwrap().unwrap();
    assert_eq!((kept.status.as_str(), kept.record), ("Completed", done));
    assert!(store.set_workspace_run_archived("wc1", true).await.unwrap());
    assert!(
        store
            .get_workspace_run("wc1")
            .await
            .unwrap()
            .unwrap()
            .archived
    );
    assert_eq!(
        names(store.list_workspace_runs().await.unwrap()),
        ["wc1", "wc1-eval"]
    );
    assert!(store.delete_workspace_run("wc1").await.unwrap());
    assert!(!store.delete_workspace_run("wc1").await.unwrap());
    assert_eq!(
        names(store.list_workspace_runs().await.unwrap()),
        ["wc1-eval"]
    );
}

/// Two handles (on Postgres: as two servers have) opened at once: migrations are serialized,
/// exactly one creates the owner, and versions numbered at once by both are all distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_share_one_database() {
    for db in backends().await {
        two_handles_on(&db).await;
    }
}

async fn two_handles_on(db: &Db) {
    let (a, b) = tokio::join!(db.open(), db.open());
    let (ta, tb) = tokio::join!(a.ensure_owner(), b.ensure_owner());
    assert_eq!(
        [ta.unwrap().is_some(), tb.unwrap().is_some()]
            .iter()
            .filter(|x| **x)
            .count(),
        1,
        "exactly one handle creates the owner"
    );
    let writes = (0..20).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { store.publish_environment("e", None, "1.1.0", "").await })
    });
    let mut versions = Vec::new();
    for w in writes {
        versions.push(w.await.unwrap().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<u32>>());
    assert_eq!(b.list_environments().await.unwrap().len(), 20);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if db.postgres.is_some() {
            return;
        }
        let mode = std::fs::metadata(db.home.path().join("flowrt.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}

/// Whether any file under `dir` contains `needle`. A file SQLite removes while this looks (a
/// journal or WAL file of a connection closing) held nothing to find.
fn file_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let path = e.unwrap().path();
        if path.is_dir() {
            file_contains(&path, needle)
        } else {
            match std::fs::read(&path) {
                Ok(bytes) => memchr::memmem::find(&bytes, needle).is_some(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    })
}

on_every_backend!(
    flow_versions_are_numbered_by_name_and_an_unchanged_push_adds_none,
    flow_versions_are_numbered_by_name_and_an_unchanged_push_adds_none_on
);
async fn flow_versions_are_numbered_by_name_and_an_unchanged_push_adds_none_on(
    _db: &Db,
    store: Store,
) {
    store.ensure_owner().await.unwrap();
    let owner = store.list_users().await.unwrap()[0].id.clone();
    let (v1, created) = store
        .push_flow("qa", &owner, "sha256:aa", None, 2, 10)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(v1.reference(), "qa@v1");
    let (same, created) = store
        .push_flow("qa", &owner, "sha256:aa", None, 2, 10)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(same.version, 1);
    let (v2, _) = store
        .push_flow("qa", &owner, "sha256:bb", None, 3, 12)
        .await
        .unwrap();
    assert_eq!(v2.reference(), "qa@v2");
    let (other, _) = store
        .push_flow("chat", &owner, "sha256:aa", Some("chat.prompty"), 1, 5)
        .await
        .unwrap();
    assert_eq!(other.reference(), "chat@v1");
    assert_eq!(
        store.get_flow("qa", None).await.unwrap().unwrap().hash,
        "sha256:bb"
    );
    assert_eq!(
        store.get_flow("qa", Some(1)).await.unwrap().unwrap().hash,
        "sha256:aa"
    );
    assert!(store.get_flow("qa", Some(9)).await.unwrap().is_none());
    let all: Vec<String> = store
        .list_flows()
        .await
        .unwrap()
        .iter()
        .map(|f| f.reference())
        .collect();
    assert_eq!(all, ["chat@v1", "qa@v1", "qa@v2"]);
}

on_every_backend!(
    spread_run_chunks_are_claimed_once_and_reclaimed_after_their_lease,
    spread_chunks_on
);
async fn spread_chunks_on(_db: &Db, store: Store) {
    use flowrt_store::SpreadRun;
    let run = SpreadRun {
        session_id: "s-1".into(),
        name: "big".into(),
        owner: "u-1".into(),
        sessions: vec!["s-1".into(), "s-2".into()],
        request: json!({"name": "big"}),
        total: 10,
        status: "Running".into(),
        error: None,
        created: 1,
    };
    store.create_spread_run(&run, 4).await.unwrap();
    assert!(matches!(
        store.create_spread_run(&run, 4).await,
        Err(StoreError::Exists { what: "run", .. })
    ));
    let got = store.get_spread_run("s-1", "big").await.unwrap().unwrap();
    assert_eq!(got.sessions, run.sessions);
    let far = i64::MAX / 2;
    // Two servers claim at once: different chunks, in order.
    let (a, b) = tokio::join!(
        store.claim_chunk("s-1", "big", "srv-a", "s-1", far, i64::MAX, false),
        store.claim_chunk("s-1", "big", "srv-b", "s-2", far, i64::MAX, false)
    );
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    let mut ranges = [(a.first, a.end), (b.first, b.end)];
    ranges.sort();
    assert_eq!(ranges, [(0, 4), (4, 8)]);
    // The last line chunk is short; the gathering step waits for every chunk.
    let c = store
        .claim_chunk("s-1", "big", "srv-a", "s-1", 0, i64::MAX, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.first, c.end, c.is_gathering()), (8, 10, false));
    // srv-a's lease on c has ended (until 0): srv-b claims it again, and srv-a's late
    // completion of it is refused.
    let again = store
        .claim_chunk("s-1", "big", "srv-b", "s-2", far, i64::MAX, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.id, again.attempt), (c.id, c.attempt + 1));
    assert!(!store.complete_chunk(&c, "srv-a", "late").await.unwrap());
    assert_eq!(
        store
            .claim_chunk("s-1", "big", "srv-a", "s-1", far, i64::MAX, false)
            .await
            .unwrap(),
        None,
        "nothing to claim while chunks run"
    );
    for (claim, holder, text) in [
        (&a, if a.first == 0 { "srv-a" } else { "srv-b" }, "A"),
        (&b, if b.first == 0 { "srv-a" } else { "srv-b" }, "B"),
    ] {
        let holder = if claim.id == a.id { "srv-a" } else { holder };
        let holder = if claim.id == b.id { "srv-b" } else { holder };
        assert!(store.complete_chunk(claim, holder, text).await.unwrap());
    }
    let progress = store.spread_progress("s-1", "big").await.unwrap();
    assert_eq!(
        (progress.chunks, progress.chunks_done, progress.lines_done),
        (3, 2, 8)
    );
    assert!(store.complete_chunk(&again, "srv-b", "C").await.unwrap());
    let gather = store
        .claim_chunk("s-1", "big", "srv-a", "s-1", far, i64::MAX, false)
        .await
        .unwrap()
        .unwrap();
    assert!(gather.is_gathering());
    let mut results = store.chunk_results("s-1", "big").await.unwrap();
    let expected_first = if a.first == 0 { "A" } else { "B" };
    assert_eq!(results.remove(0), expected_first);
    assert_eq!(results.pop().as_deref(), Some("C"));
    store
        .finish_spread_run("s-1", "big", "Completed", None)
        .await
        .unwrap();
    assert!(store.running_spread_runs().await.unwrap().is_empty());
    assert_eq!(
        store
            .claim_chunk("s-1", "big", "srv-a", "s-1", far, i64::MAX, false)
            .await
            .unwrap(),
        None
    );
}

on_every_backend!(a_session_is_managed_by_one_server_at_a_time, managers_on);
async fn managers_on(_db: &Db, store: Store) {
    let (ada, _) = store.create_user("ada", Role::User).await.unwrap();
    let s = store.insert_session(&new_session(&ada.id)).await.unwrap();
    let far = i64::MAX / 2;
    assert!(store.claim_session(&s.id, "srv-a", far).await.unwrap());
    assert!(!store.claim_session(&s.id, "srv-b", far).await.unwrap());
    // srv-a's lease ends (renewed into the past): srv-b takes it over.
    store.renew_leases("srv-a", 0).await.unwrap();
    assert!(store.claim_session(&s.id, "srv-b", far).await.unwrap());
    let got = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(got.manager.as_deref(), Some("srv-b"));
    store.release_session(&s.id, "srv-b").await.unwrap();
    assert!(store.claim_session(&s.id, "srv-a", far).await.unwrap());
}

on_every_backend!(
    endpoints_deployments_instances_and_requests,
    endpoints_round_trip_on
);
async fn endpoints_round_trip_on(db: &Db, store: Store) {
    let (owner, _) = store.create_user("ana", Role::User).await.unwrap();
    let (e, primary, secondary) = store
        .create_endpoint("support", &owner.id, 30)
        .await
        .unwrap();
    assert!(primary.starts_with(flowrt_store::ENDPOINT_KEY_PREFIX));
    assert!(e.accepts_key(&primary) && e.accepts_key(&secondary));
    assert!(!e.accepts_key("fre_guess"));
    // Keys are kept as their hashes only.
    assert!(!db.holds(&primary).await && !db.holds(&secondary).await);
    assert!(matches!(
        store.create_endpoint("support", &owner.id, 30).await,
        Err(StoreError::Exists { .. })
    ));
    let new = store
        .regenerate_endpoint_key("support", false)
        .await
        .unwrap()
        .unwrap();
    let e = store.get_endpoint("support").await.unwrap().unwrap();
    assert!(e.accepts_key(&new) && !e.accepts_key(&primary) && e.accepts_key(&secondary));

    let mut d = flowrt_store::Deployment {
        endpoint: "support".into(),
        name: "blue".into(),
        owner: owner.id.clone(),
        flow_ref: "chat@v1".into(),
        flow_dir: "/snapshots/a".into(),
        revision: 0,
        instances: 2,
        min_instances: 2,
        max_instances: 2,
        target_concurrency: 8,
        size: "small".into(),
        sample_rate: 0.25,
        redact_payloads: true,
        created: 0,
        updated: 0,
    };
    let made = store.create_deployment(&d).await.unwrap();
    assert_eq!(
        (made.revision, made.sample_rate, made.redact_payloads),
        (1, 0.25, true)
    );
    // The same settings keep the revision; another flow version starts the next.
    d.instances = 3;
    assert!(store.update_deployment(&d).await.unwrap());
    assert_eq!(
        store
            .get_deployment("support", "blue")
            .await
            .unwrap()
            .unwrap()
            .revision,
        1
    );
    d.flow_ref = "chat@v2".into();
    d.flow_dir = "/snapshots/b".into();
    store.update_deployment(&d).await.unwrap();
    let now = store
        .get_deployment("support", "blue")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (now.revision, now.instances, now.flow_ref.as_str()),
        (2, 3, "chat@v2")
    );

    // One session per slot: a second claim of a slot loses.
    let slot = |session: &str, slot: u32| flowrt_store::DeploymentInstance {
        endpoint: "support".into(),
        deployment: "blue".into(),
        revision: 2,
        slot,
        session_id: session.into(),
        created: 0,
    };
    assert!(store.claim_instance_slot(&slot("s-1", 0)).await.unwrap());
    assert!(!store.claim_instance_slot(&slot("s-2", 0)).await.unwrap());
    assert!(store.claim_instance_slot(&slot("s-2", 1)).await.unwrap());
    assert_eq!(store.list_instances().await.unwrap().len(), 2);
    assert!(store.delete_instance("s-1").await.unwrap());

    let traffic = indexmap::IndexMap::from([("blue".to_string(), 100u32)]);
    store.update_endpoint("support", &traffic, 7).await.unwrap();
    let e = store.get_endpoint("support").await.unwrap().unwrap();
    assert_eq!((e.traffic, e.retention_days), (traffic, 7));

    let row = |id: &str, started: i64, status: u16, detail: Option<&str>| flowrt_store::ScoreRow {
        id: id.into(),
        endpoint: "support".into(),
        deployment: "blue".into(),
        session_id: "s-2".into(),
        started,
        latency_ms: 1.5,
        status,
        total_tokens: 8,
        streamed: true,
        detail: detail.map(str::to_string),
        ..Default::default()
    };
    store
        .insert_score_rows(&[
            row("r1", 1_000, 200, Some(r#"{"inputs": {"q": 1}}"#)),
            row("r2", 2_000, 400, None),
            row("r3", 3_000, 200, None),
        ])
        .await
        .unwrap();
    let all = store
        .list_score_rows(
            "support",
            &flowrt_store::ScoreFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r3", "r2", "r1"]
    );
    assert_eq!(
        all.iter().map(|r| r.sampled).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert!(all.iter().all(|r| r.detail.is_none() && r.streamed));
    let failed = store
        .list_score_rows(
            "support",
            &flowrt_store::ScoreFilter {
                failed: Some(true),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let one = store.get_score_row("support", "r1").await.unwrap().unwrap();
    assert!(one.sampled && one.detail.as_deref().unwrap().contains("inputs"));
    assert_eq!(store.prune_score_rows("support", 2_500).await.unwrap(), 2);

    // A connection's change moves the fingerprint.
    let before = store.connections_fingerprint().await.unwrap();
    store
        .put_connection(&owner.id, "c", "custom", false)
        .await
        .unwrap();
    assert_ne!(store.connections_fingerprint().await.unwrap(), before);

    assert!(store.delete_endpoint("support").await.unwrap());
    assert!(store.list_deployments(None).await.unwrap().is_empty());
    // The instances stay until the supervisor has stopped their sessions.
    assert_eq!(store.list_instances().await.unwrap().len(), 1);
    assert!(store.delete_instance("s-2").await.unwrap());
}

on_every_backend!(
    a_save_from_an_older_version_is_stale_and_records_nothing,
    a_save_from_an_older_version_is_stale_and_records_nothing_on
);
async fn a_save_from_an_older_version_is_stale_and_records_nothing_on(_db: &Db, store: Store) {
    use flowrt_store::{FlowSaved, NewFlowVersion};
    store.ensure_owner().await.unwrap();
    let owner = store.list_users().await.unwrap()[0].id.clone();
    let save = |hash: &'static str, expect: u32| NewFlowVersion {
        name: "qa",
        owner: "",
        hash,
        entry: None,
        files: 1,
        bytes: 1,
        message: Some("why"),
        expect_latest: Some(expect),
    };
    let first = NewFlowVersion {
        owner: &owner,
        ..save("sha256:aa", 0)
    };
    let FlowSaved::Created(v1) = store.save_flow(&first).await.unwrap() else {
        panic!("the first save creates v1")
    };
    assert_eq!((v1.version, v1.message.as_deref()), (1, Some("why")));
    let from_v1 = NewFlowVersion {
        owner: &owner,
        ..save("sha256:bb", 1)
    };
    assert!(matches!(
        store.save_flow(&from_v1).await.unwrap(),
        FlowSaved::Created(ref v2) if v2.version == 2
    ));
    // Another save from v1 loses: v2 is named, and no v3 appears.
    let late = NewFlowVersion {
        owner: &owner,
        ..save("sha256:cc", 1)
    };
    match store.save_flow(&late).await.unwrap() {
        FlowSaved::Stale(Some(latest)) => assert_eq!(latest.version, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.get_flow("qa", None).await.unwrap().unwrap().version,
        2
    );
    // A first save under a taken name is stale too.
    assert!(matches!(
        store
            .save_flow(&NewFlowVersion {
                owner: &owner,
                ..save("sha256:dd", 0)
            })
            .await
            .unwrap(),
        FlowSaved::Stale(Some(_))
    ));
}
