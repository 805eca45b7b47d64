//! The workspace's files shared through the database: two servers' homes (two caches) on one
//! database see each other's files, byte for byte, and nothing leads a cache outside its home.
//! On SQLite, and on PostgreSQL when `./scripts/test.sh` started it (`FLOWRT_TEST_POSTGRES`).

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_store::{Blobs, Store};
use std::path::Path;

/// A store per backend, with two homes caching its files.
async fn backends() -> Vec<(Store, tempfile::TempDir, tempfile::TempDir)> {
    let mut all = Vec::new();
    let db_home = tempfile::tempdir().unwrap();
    let sqlite = Store::open(db_home.path()).await.unwrap();
    all.push((
        sqlite,
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ));
    std::mem::forget(db_home); // the SQLite file lives as long as the test process
    if let Some(admin) = flowrt_store::testing::postgres_url() {
        let url = flowrt_store::testing::fresh_database(&admin).await.unwrap();
        let home = tempfile::tempdir().unwrap();
        let pg = Store::open_postgres(home.path(), &url).await.unwrap();
        std::mem::forget(home);
        all.push((
            pg,
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        ));
    }
    all
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_homes_on_one_database_see_each_others_files() {
    for (store, a_home, b_home) in backends().await {
        let (a, b) = (
            Blobs::database(&store, a_home.path()),
            Blobs::database(&store, b_home.path()),
        );
        // A file larger than a chunk, written whole on one, fetched on the other.
        let big: Vec<u8> = (0..(flowrt_store::blobs::CHUNK * 2 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let on_a = a_home.path().join("data/u-1/big.jsonl");
        write(&on_a, &big);
        a.publish_file(&on_a).await.unwrap();
        let on_b = b_home.path().join("data/u-1/big.jsonl");
        assert!(b.fetch_file(&on_b).await.unwrap());
        assert_eq!(std::fs::read(&on_b).unwrap(), big);
        assert!(!b
            .fetch_file(&b_home.path().join("data/u-1/none.jsonl"))
            .await
            .unwrap());

        // A run's records grow on one and follow on the other, a piece at a time.
        let run_a = a_home.path().join("workspace/runs/r1");
        let run_b = b_home.path().join("workspace/runs/r1");
        write(&run_a.join("line_runs.jsonl"), b"{\"line\": 0}\n");
        a.publish_tail(&run_a.join("line_runs.jsonl"))
            .await
            .unwrap();
        b.sync_dir(&run_b, false).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(run_b.join("line_runs.jsonl")).unwrap(),
            "{\"line\": 0}\n"
        );
        append(&run_a.join("line_runs.jsonl"), b"{\"line\": 1}\n");
        a.publish_tail(&run_a.join("line_runs.jsonl"))
            .await
            .unwrap();
        // Publishing again stores nothing twice.
        a.publish_tail(&run_a.join("line_runs.jsonl"))
            .await
            .unwrap();
        b.sync_dir(&run_b, false).await.unwrap();
        assert_eq!(
            std::fs::read(run_b.join("line_runs.jsonl")).unwrap(),
            std::fs::read(run_a.join("line_runs.jsonl")).unwrap()
        );
        // A file written whole is fetched again even at the same length.
        write(&run_a.join("metrics.json"), b"{\"a\": 1}");
        a.publish_file(&run_a.join("metrics.json")).await.unwrap();
        b.sync_dir(&run_b, false).await.unwrap();
        write(&run_a.join("metrics.json"), b"{\"a\": 2}");
        a.publish_file(&run_a.join("metrics.json")).await.unwrap();
        b.sync_dir(&run_b, false).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(run_b.join("metrics.json")).unwrap(),
            "{\"a\": 2}"
        );
        // Unchanged, it is not fetched again (the same file stays: a fetch renames a new one in).
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&run_b.join("metrics.json"));
        b.sync_dir(&run_b, false).await.unwrap();
        assert_eq!(inode(&run_b.join("metrics.json")), before);
        // Nor is a file this home wrote and stored itself.
        write(&run_b.join("errors.json"), b"[]");
        b.publish_file(&run_b.join("errors.json")).await.unwrap();
        let own = inode(&run_b.join("errors.json"));
        b.sync_dir(&run_b, false).await.unwrap();
        assert_eq!(inode(&run_b.join("errors.json")), own);
        // Replaced elsewhere at the same length, it is.
        write(&run_a.join("metrics.json"), b"{\"a\": 3}");
        a.publish_file(&run_a.join("metrics.json")).await.unwrap();
        b.sync_dir(&run_b, false).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(run_b.join("metrics.json")).unwrap(),
            "{\"a\": 3}"
        );
        // A file of b's own, not stored yet, is kept; mirrored, it goes.
        write(&run_b.join("mine.txt"), b"x");
        b.sync_dir(&run_b, false).await.unwrap();
        assert!(run_b.join("mine.txt").exists());
        b.sync_dir(&run_b, true).await.unwrap();
        assert!(!run_b.join("mine.txt").exists());

        // Deleted on one: stored nowhere, and a third home finds nothing.
        a.delete_dir(&run_a).await.unwrap();
        assert!(!run_a.exists());
        let c_home = tempfile::tempdir().unwrap();
        let c = Blobs::database(&store, c_home.path());
        let run_c = c_home.path().join("workspace/runs/r1");
        c.sync_dir(&run_c, false).await.unwrap();
        assert!(!run_c.join("line_runs.jsonl").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_leads_a_cache_outside_its_home() {
    for (store, a_home, b_home) in backends().await {
        let a = Blobs::database(&store, a_home.path());
        // Paths outside the home, or climbing out of it, are not keys.
        for bad in [
            Path::new("/etc/passwd").to_path_buf(),
            a_home.path().join("../x"),
            a_home.path().to_path_buf(),
        ] {
            assert!(a.publish_file(&bad).await.is_err(), "{}", bad.display());
            assert!(a.fetch_file(&bad).await.is_err() || bad.is_file());
        }
        // A link planted in a cache where a stored file goes is not written through.
        let run_a = a_home.path().join("workspace/runs/r2");
        write(&run_a.join("logs.txt"), b"hello");
        a.publish_tail(&run_a.join("logs.txt")).await.unwrap();
        let b = Blobs::database(&store, b_home.path());
        let run_b = b_home.path().join("workspace/runs/r2");
        std::fs::create_dir_all(&run_b).unwrap();
        let target = b_home.path().join("secret");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, run_b.join("logs.txt")).unwrap();
        assert!(b.sync_dir(&run_b, false).await.is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        // Nor is a link published: its target stays where it is.
        let link = a_home.path().join("data/u-1/link.jsonl");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(a.publish_file(&link).await.is_err());
    }
}
