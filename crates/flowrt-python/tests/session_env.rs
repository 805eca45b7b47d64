//! Environments as sessions use them: base versions, custom environments, conflicts, `{private}`
//! feed tokens, installed packages and gc. Real `uv` and PyPI.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_python::{
    ensure_env_with, gc, installed_packages, resolve_env, EnvError, EnvOptions, EnvRequest,
    ExtraRequirements, PackageSource,
};
use std::path::Path;

fn request<'a>(home: &'a Path, req: &'a Path) -> EnvRequest<'a> {
    EnvRequest {
        requirements: Some(req),
        flowrt_home: home,
    }
}

#[test]
fn key_changes_with_base_version_and_custom_requirements() {
    let home = tempfile::tempdir().unwrap();
    let req = home.path().join("requirements.txt");
    std::fs::write(&req, "six\n").unwrap();
    let key = |opts: EnvOptions| resolve_env(request(home.path(), &req), &opts).unwrap();
    let latest = key(EnvOptions::default());
    assert_eq!(latest.base.version, "1.2.0");
    let explicit = key(EnvOptions {
        base_version: Some("1.2.0"),
        ..Default::default()
    });
    let old = key(EnvOptions {
        base_version: Some("1.0.0"),
        ..Default::default()
    });
    assert_eq!(latest.key, explicit.key);
    assert_ne!(latest.key, old.key);
    assert!(!latest.is_built(home.path()));

    let custom = key(EnvOptions {
        extra_requirements: Some(ExtraRequirements {
            label: "environment myenv@v1",
            text: "pyyaml\nsix==1.16.0\n",
        }),
        ..Default::default()
    });
    // an earlier pin stays beside the flow's unpinned entry; uv satisfies both
    assert_eq!(custom.lines, ["pyyaml", "six==1.16.0", "six"]);
    assert_ne!(custom.key, latest.key);

    // a custom environment alone (no flow requirements) is built too
    let only_custom = resolve_env(
        EnvRequest {
            requirements: None,
            flowrt_home: home.path(),
        },
        &EnvOptions {
            extra_requirements: Some(ExtraRequirements {
                label: "environment myenv@v1",
                text: "six\n",
            }),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(only_custom.lines, ["six"]);
    assert!(only_custom.key.is_some());

    assert!(matches!(
        resolve_env(
            request(home.path(), &req),
            &EnvOptions {
                base_version: Some("0.9.0"),
                ..Default::default()
            }
        ),
        Err(EnvError::UnknownBase { .. })
    ));
}

#[test]
fn conflicts_are_reported_before_any_install() {
    let home = tempfile::tempdir().unwrap();
    let req = home.path().join("requirements.txt");
    std::fs::write(&req, "numpy==2.0.0\n").unwrap();
    let err = ensure_env_with(
        request(home.path(), &req),
        &EnvOptions {
            extra_requirements: Some(ExtraRequirements {
                label: "environment myenv@v1",
                text: "numpy==1.26.4\n",
            }),
            ..Default::default()
        },
        &mut |m| panic!("no progress expected: {m}"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "requirements.txt: numpy==2.0.0 conflicts with environment myenv@v1: numpy==1.26.4"
    );
    assert!(!home.path().join("envs").exists());
}

#[test]
fn private_feed_token_needed_used_and_never_kept() {
    let home = tempfile::tempdir().unwrap();
    let req = home.path().join("requirements.txt");
    std::fs::write(
        &req,
        "-i http://{private}@127.0.0.1:9/simple\nflowrt-private-pkg-4711==1.0\n",
    )
    .unwrap();
    let err = ensure_env_with(
        request(home.path(), &req),
        &EnvOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, EnvError::MissingFeedToken { .. }), "{err:?}");
    assert!(err.to_string().contains("--identity"), "{err}");

    let token = "sekrit-feed-token-5150";
    // A token goes only to the hosts its identity names.
    let err = resolve_env(
        request(home.path(), &req),
        &EnvOptions {
            private_token: Some(token),
            private_hosts: &["pkgs.example.com".to_string()],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, EnvError::PrivateHostRefused { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`127.0.0.1`") && !err.to_string().contains(token),
        "{err}"
    );
    let hosts = ["127.0.0.1".to_string()];
    let mut messages = Vec::new();
    let opts = EnvOptions {
        private_token: Some(token),
        private_hosts: &hosts,
        ..Default::default()
    };
    let err = ensure_env_with(request(home.path(), &req), &opts, &mut |m| {
        messages.push(m.to_string())
    })
    .unwrap_err();
    assert!(matches!(err, EnvError::Install { .. }), "{err:?}");
    let text = format!("{err} {err:?} {messages:?} {opts:?}");
    assert!(!text.contains(token), "{text}");
    assert!(!tree_contains(home.path(), token.as_bytes()));
    // the key does not depend on the token
    let a = resolve_env(request(home.path(), &req), &opts).unwrap();
    let b = resolve_env(
        request(home.path(), &req),
        &EnvOptions {
            private_token: Some("other"),
            private_hosts: &hosts,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(a.key, b.key);
    assert_eq!(a.index, ["-i http://{private}@127.0.0.1:9/simple"]);
}

#[test]
fn installed_packages_and_gc() {
    let home = tempfile::tempdir().unwrap();
    let build = |text: &str| {
        let req = home.path().join("requirements.txt");
        std::fs::write(&req, text).unwrap();
        ensure_env_with(
            request(home.path(), &req),
            &EnvOptions::default(),
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let six = build("six==1.16.0\n");
    let packages = installed_packages(&six).unwrap();
    let found = packages.iter().find(|p| p.name == "six").unwrap();
    assert_eq!(
        (found.version.as_str(), found.source),
        ("1.16.0", PackageSource::Requirements)
    );
    assert!(packages
        .iter()
        .filter(|p| p.name != "six")
        .all(|p| p.source == PackageSource::Base));
    // The base's packages lie under the flow's requirements, and what the flow names wins
    // (the base pins six 1.17.0), as `pip install -r` over a runtime image.
    let openai = packages.iter().find(|p| p.name == "openai");
    assert_eq!(
        openai.map(|p| p.source),
        Some(PackageSource::Base),
        "{packages:?}"
    );

    // two more environments (without installing anything new: custom pins of six)
    let older = build("six==1.16.0\n# b\nsix\n");
    let newest = build("six\n");
    let key = |python: &Path| {
        python
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    // use `six` again: now `older` is the least recently used
    std::thread::sleep(std::time::Duration::from_millis(10));
    assert_eq!(build("six==1.16.0\n"), six);
    let removed = gc(home.path(), 2).unwrap();
    assert_eq!(removed, [key(&older)]);
    assert!(six.exists() && newest.exists() && !older.exists());
    assert_eq!(gc(home.path(), 2).unwrap(), Vec::<String>::new());
    let removed = gc(home.path(), 0).unwrap();
    assert_eq!(removed, [key(&newest), key(&six)]);
}

fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let path = e.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            tree_contains(&path, needle)
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            memchr::memmem::find(&bytes, needle).is_some()
        } else {
            false
        }
    })
}
