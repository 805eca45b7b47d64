//! `flowrt env`: base and custom environments, publishing, gc — through the real binary.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::Env;

#[test]
fn list_shows_bases_then_published_environments() {
    let env = Env::new();
    let r = env.run(&["env", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    const BASES: &str = "default@1.0.0  python >=3.8; no packages
default@1.1.0  python >=3.9; no packages
default@1.2.0 (latest)  python >=3.9; packages: openai, tiktoken, opentelemetry-sdk, google-search-results, requests, jinja2, pydantic, jsonschema, python-dateutil, ruamel.yaml, python-dotenv, numpy, psutil, flask, fastapi, docstring_parser, filetype (86 pins with their dependencies)
";
    assert_eq!(r.stdout, BASES);

    let req = env.home.path().join("req.txt");
    std::fs::write(&req, "six==1.16.0\n").unwrap();
    let req = req.to_str().unwrap();
    let r = env.run(&["env", "create", "myenv", "--requirements", req]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "myenv@v1\n"),
        "{}",
        r.stderr
    );
    let r = env.run(&[
        "env",
        "create",
        "myenv",
        "-r",
        req,
        "--from",
        "default@1.0.0",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "myenv@v2\n"),
        "{}",
        r.stderr
    );
    let r = env.run(&["env", "create", "alpha", "-r", req]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "alpha@v1\n"),
        "{}",
        r.stderr
    );

    let r = env.run(&["env", "list"]);
    assert_eq!(
        r.stdout,
        format!("{BASES}alpha@v1 (base 1.2.0)\nmyenv@v1 (base 1.2.0)\nmyenv@v2 (base 1.0.0)\n")
    );
    let r = env.run(&["env", "list", "--json"]);
    let v = r.json();
    assert_eq!(v["base"][2]["ref"], "default@1.2.0");
    assert_eq!(v["base"][2]["latest"], true);
    assert_eq!(v["base"][0]["latest"], false);
    assert_eq!(v["base"][2]["packages"][0], "openai");
    assert_eq!(v["base"][0]["pins"], serde_json::json!([]));
    assert_eq!(v["custom"][2]["ref"], "myenv@v2");
    assert_eq!(v["custom"][2]["requirements"], "six==1.16.0\n");
}

#[test]
fn create_rejects_bad_names_and_bases() {
    let env = Env::new();
    let req = env.home.path().join("req.txt");
    std::fs::write(&req, "six\n").unwrap();
    let req = req.to_str().unwrap();
    let r = env.run(&["env", "create", "default", "-r", req]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("invalid environment name `default`"),
        "{}",
        r.stderr
    );
    let r = env.run(&["env", "create", "x", "-r", req, "--from", "default@9.9.9"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("unknown base environment version `9.9.9`; available: 1.0.0, 1.1.0, 1.2.0"),
        "{}",
        r.stderr
    );
    let r = env.run(&["env", "create", "x", "-r", req, "--from", "other@v1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--from takes a base environment"),
        "{}",
        r.stderr
    );
    let r = env.run(&["env", "create", "x", "-r", "/nonexistent/req.txt"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("/nonexistent/req.txt"), "{}", r.stderr);
    assert_eq!(r.stdout, "");
}

#[test]
fn gc_removes_least_recently_used_folders() {
    let env = Env::new();
    let envs = env.home.path().join("envs");
    // fake built environments: gc only looks at the folders, markers and last-used stamps
    for (key, used) in [("a", 3), ("b", 1), ("c", 2)] {
        let dir = envs.join(key.repeat(32));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".flowrt-ready"), "3.11\n").unwrap();
        std::fs::write(dir.join(".flowrt-last-used"), format!("{used}\n")).unwrap();
    }
    let r = env.run(&["env", "gc", "--keep", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("{}\n{}\n", "b".repeat(32), "c".repeat(32))
    );
    assert!(
        r.stderr.contains("removed 2 environment(s)"),
        "{}",
        r.stderr
    );
    assert!(envs.join("a".repeat(32)).is_dir());
    let r = env.run(&["env", "gc"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""));
}

/// Azure's runtime image gave every flow the OpenAI SDK without a requirements.txt; so does the
/// base environment. Where its packages cannot be installed (no index reachable), a flow still
/// runs, without them, and the user is told which packages are missing and why.
#[test]
fn a_flow_without_requirements_finds_the_base_packages_and_runs_without_them_offline() {
    let env = Env::new();
    let (_d, flow) = common::flow("base_packages");
    let flow = flow.to_str().unwrap();
    let r = env.run(&["flow", "test", flow, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.json()["found"].as_str().unwrap().starts_with("openai "),
        "{}",
        r.stdout
    );

    let offline = Env::new();
    let cache = tempfile::tempdir().unwrap();
    let uv_cache = cache.path().join("uv");
    let (cache, uv_cache) = (cache.path().to_str().unwrap(), uv_cache.to_str().unwrap());
    // A machine with nothing cached: uv's cache too, wherever UV_CACHE_DIR put it.
    let vars = [
        ("XDG_CACHE_HOME", cache),
        ("UV_CACHE_DIR", uv_cache),
        ("UV_OFFLINE", "1"),
    ];
    let r = offline.run_with_env(&["flow", "test", flow, "--json"], &vars);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["found"], "missing: openai", "{}", r.stderr);
    assert!(
        r.stderr
            .contains("installing the packages of base environment default@1.2.0 failed"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("the flow runs without the base's packages (openai, tiktoken,"),
        "{}",
        r.stderr
    );
    // The failure is remembered: the next start does not wait on the index again (in another
    // home of this machine too), and says when it tries again.
    let elsewhere = Env::new();
    let r = elsewhere.run_with_env(&["flow", "test", flow, "--json"], &vars);
    assert_eq!(r.json()["found"], "missing: openai", "{}", r.stderr);
    assert!(
        !r.stderr.contains("building") && r.stderr.contains("could not be installed"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("flowrt tries again 10 minutes after a failure"),
        "{}",
        r.stderr
    );
}
