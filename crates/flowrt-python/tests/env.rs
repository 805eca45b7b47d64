//! Integration tests for environments: real `uv` (installed on demand) and PyPI.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_python::{
    default_python, ensure_env, ensure_env_with, installed_packages, latest_base, EnvError,
    EnvOptions, EnvRequest, PackageSource,
};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

#[test]
fn no_requirements_on_a_base_without_packages_uses_default_python() {
    let home = tempfile::tempdir().unwrap();
    let mut messages = Vec::new();
    let bare = EnvOptions {
        base_version: Some("1.1.0"),
        ..Default::default()
    };
    let python = ensure_env_with(
        EnvRequest {
            requirements: None,
            flowrt_home: home.path(),
        },
        &bare,
        &mut |m| messages.push(m.to_string()),
    )
    .unwrap();
    assert_eq!(python, default_python());
    // a missing file and a file with only comments behave the same
    let missing = home.path().join("requirements.txt");
    let python = ensure_env_with(
        EnvRequest {
            requirements: Some(&missing),
            flowrt_home: home.path(),
        },
        &bare,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(python, default_python());
    std::fs::write(&missing, "# nothing here\n\n").unwrap();
    let python = ensure_env_with(
        EnvRequest {
            requirements: Some(&missing),
            flowrt_home: home.path(),
        },
        &bare,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(python, default_python());
    assert!(messages.is_empty());
    assert!(!home.path().join("envs").exists());
}

/// What Azure's runtime image gave every flow: `import openai` with no requirements.txt. Built
/// once for the machine, then linked into each home in a moment, sharing its files.
#[test]
fn the_base_environment_is_built_once_per_machine_and_linked_into_each_home() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let give = |home: &Path| {
        let mut messages = Vec::new();
        let started = Instant::now();
        let python = ensure_env(
            EnvRequest {
                requirements: None,
                flowrt_home: home,
            },
            &mut |m| messages.push(m.to_string()),
        )
        .unwrap();
        (python, messages, started.elapsed())
    };
    let (python, messages, _) = give(first.path());
    assert!(python.starts_with(first.path().join("envs")), "{python:?}");
    // built for this machine now, or by an earlier test: linking alone says nothing
    assert!(
        messages.is_empty() || messages[0].starts_with("building base environment default@1.2.0"),
        "{messages:?}"
    );
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import openai, tiktoken, requests, jinja2; print(openai.__version__)",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pinned = latest_base()
        .pin_lines()
        .filter(|l| l.starts_with("openai=="))
        .any(|l| l.starts_with(&format!("openai=={version}")));
    assert!(pinned, "openai {version} is not a pin of the base");
    let packages = installed_packages(&python).unwrap();
    assert!(packages.iter().all(|p| p.source == PackageSource::Base));

    // another home: nothing built, only linked, and the files are the machine's
    let (again, messages, took) = give(second.path());
    assert_eq!(messages, Vec::<String>::new());
    assert!(took.as_secs_f64() < 5.0, "linking took {took:?}");
    let init = |python: &Path| {
        let env = python.parent().unwrap().parent().unwrap();
        let found = walk_find(env, "openai", "__init__.py").unwrap();
        std::fs::metadata(found).unwrap().ino()
    };
    assert_eq!(init(&python), init(&again));
    // and the same home again is instant, with nothing said
    let (same, messages, _) = give(second.path());
    assert_eq!((same, messages), (again, Vec::<String>::new()));
}

fn walk_find(dir: &Path, parent: &str, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() && !path.is_symlink() {
            if let Some(found) = walk_find(&path, parent, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name)
            && path
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == parent)
        {
            return Some(path);
        }
    }
    None
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
