//! Integration tests for environments: real `uv` (installed on demand) and PyPI.

use flowrt_python::{default_python, ensure_env, EnvError, EnvRequest};
use std::time::Instant;

#[test]
fn no_requirements_uses_default_python() {
    let home = tempfile::tempdir().unwrap();
    let mut messages = Vec::new();
    let python = ensure_env(
        EnvRequest {
            requirements: None,
            flowrt_home: home.path(),
        },
        &mut |m| messages.push(m.to_string()),
    )
    .unwrap();
    assert_eq!(python, default_python());
    // a missing file and a file with only comments behave the same
    let missing = home.path().join("requirements.txt");
    let python = ensure_env(
        EnvRequest {
            requirements: Some(&missing),
            flowrt_home: home.path(),
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(python, default_python());
    std::fs::write(&missing, "# nothing here\n\n").unwrap();
    let python = ensure_env(
        EnvRequest {
            requirements: Some(&missing),
            flowrt_home: home.path(),
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(python, default_python());
    assert!(messages.is_empty());
    assert!(!home.path().join("envs").exists());
}

#[test]
fn builds_a_venv_once_and_reuses_it() {
    let home = tempfile::tempdir().unwrap();
    let req = home.path().join("requirements.txt");
    std::fs::write(&req, "# tiny\nsix==1.16.0  # pinned\n").unwrap();
    let build = || {
        let mut messages = Vec::new();
        let python = ensure_env(
            EnvRequest {
                requirements: Some(&req),
                flowrt_home: home.path(),
            },
            &mut |m| messages.push(m.to_string()),
        );
        (python, messages)
    };
    // two concurrent builds of one key: one builds, the other waits and reuses
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(build);
        let b = s.spawn(build);
        (a.join().unwrap(), b.join().unwrap())
    });
    let python_a = a.0.unwrap_or_else(|e| panic!("{e}"));
    let python_b = b.0.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(python_a, python_b);
    assert!(python_a.starts_with(home.path().join("envs")));
    let env_dir = python_a.parent().unwrap().parent().unwrap();
    assert!(env_dir.join(".flowrt-ready").is_file());
    let out = std::process::Command::new(&python_a)
        .args(["-c", "import six; print(six.__version__)"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.16.0");
    // pip is there too (promptflow flows sometimes shell out to it), as the env's own module.
    let out = std::process::Command::new(&python_a)
        .args(["-m", "pip", "--version"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&env_dir.display().to_string()),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(env_dir.join("bin").join("pip").is_file());

    // reuse: instant, no progress messages
    let started = Instant::now();
    let (again, messages) = build();
    assert_eq!(again.unwrap(), python_a);
    assert!(messages.is_empty(), "{messages:?}");
    assert!(started.elapsed().as_secs_f64() < 2.0);

    // same requirements with other comments/blank lines: same key
    std::fs::write(&req, "six==1.16.0\n\n# other comment\n").unwrap();
    let (same, _) = build();
    assert_eq!(same.unwrap(), python_a);
}

#[test]
fn install_failure_names_the_package() {
    let home = tempfile::tempdir().unwrap();
    let req = home.path().join("requirements.txt");
    std::fs::write(&req, "flowrt-no-such-package-xyz-4711==0.0.1\n").unwrap();
    let err = ensure_env(
        EnvRequest {
            requirements: Some(&req),
            flowrt_home: home.path(),
        },
        &mut |_| {},
    )
    .unwrap_err();
    match &err {
        EnvError::Install {
            requirements,
            stderr_tail,
        } => {
            assert_eq!(requirements, &req);
            assert!(
                stderr_tail.contains("flowrt-no-such-package-xyz-4711"),
                "{stderr_tail}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("requirements.txt"));
    // no ready marker: a later call retries the build
    let envs: Vec<_> = std::fs::read_dir(home.path().join("envs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(".flowrt-ready").exists())
        .collect();
    assert!(envs.is_empty());
}
