//! A catalog of refusals: what a user sees when the input is bad, one snapshot per case, for
//! every command family (flows, runs, connections, data, environments, and the commands that
//! need a server, without one and against a real one), plus each command's `--help`. A refusal
//! should say what is wrong, where, and how to fix it; a change to one shows up in review as a
//! snapshot diff. One `#[test]` per family, so the families run in parallel.

// A catalog reads top to bottom, one line a case: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::server::Server;
use common::{flow, s, Env, Run};

/// A folder in `dir` holding one `flow.dag.yaml` with `yaml`.
fn flow_with(dir: &std::path::Path, name: &str, yaml: &str) -> std::path::PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("flow.dag.yaml"), yaml).unwrap();
    folder
}

#[test]
fn flow_refusals() {
    let env = Env::new();
    let (d, ok) = flow("batch_trivial");
    let tmp = d.path();
    let paths = [(tmp, "[TMP]"), (env.home.path(), "[HOME]")];
    let missing = tmp.join("no_such_flow");
    let empty = tmp.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let broken = flow_with(tmp, "broken", "inputs:\n  x: [type: int\nnodes: {\n");
    let dangling = flow_with(
        tmp,
        "dangling",
        "inputs:\n  x:\n    type: int\noutputs:\n  y:\n    type: int\n    reference: ${nope.output}\nnodes: []\n",
    );
    let no_tool = flow_with(
        tmp,
        "no_tool",
        "inputs:\n  x:\n    type: int\noutputs:\n  y:\n    type: int\n    reference: ${inc.output}\nnodes:\n- name: inc\n  type: python\n  source:\n    type: code\n    path: missing.py\n  inputs:\n    x: ${inputs.x}\n",
    );
    let not_json = tmp.join("inputs.json");
    std::fs::write(&not_json, "{x: 1,").unwrap();
    let a_list = tmp.join("list.json");
    std::fs::write(&a_list, "[1, 2]").unwrap();

    // `flow test`: the flow, then its inputs.
    flowrt_snapshot!("flow_test_no_argument", env.run(&["flow", "test"]), &paths);
    flowrt_snapshot!(
        "flow_test_missing_folder",
        env.run(&["flow", "test", s(&missing)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_test_folder_without_flow",
        env.run(&["flow", "test", s(&empty)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_test_broken_yaml",
        env.run(&["flow", "test", s(&broken)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_test_inputs_without_equals",
        env.run(&["flow", "test", s(&ok), "--inputs", "x"]),
        &paths
    );
    flowrt_snapshot!(
        "flow_test_wrong_input_name",
        env.run(&["flow", "test", s(&ok), "--inputs", "y=1"]),
        &paths
    );
    flowrt_snapshot!(
        "flow_test_missing_inputs_file",
        env.run(&[
            "flow",
            "test",
            s(&ok),
            "--inputs-file",
            s(&tmp.join("nope.json"))
        ]),
        &paths
    );
    flowrt_snapshot!(
        "flow_test_inputs_file_not_json",
        env.run(&["flow", "test", s(&ok), "--inputs-file", s(&not_json)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_test_inputs_file_not_an_object",
        env.run(&["flow", "test", s(&ok), "--inputs-file", s(&a_list)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_test_unknown_variant",
        env.run(&[
            "flow",
            "test",
            s(&ok),
            "--inputs",
            "x=1",
            "--variant",
            "${inc.variant_9}"
        ]),
        &paths
    );

    // `flow validate`: the same flows, checked without running.
    flowrt_snapshot!(
        "flow_validate_missing_folder",
        env.run(&["flow", "validate", s(&missing)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_validate_folder_without_flow",
        env.run(&["flow", "validate", s(&empty)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_validate_broken_yaml",
        env.run(&["flow", "validate", s(&broken)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_validate_dangling_reference",
        env.run(&["flow", "validate", s(&dangling)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_validate_missing_tool_file",
        env.run(&["flow", "validate", s(&no_tool)]),
        &paths
    );

    // `flow push` and the workspace commands need a server.
    flowrt_snapshot!(
        "flow_push_without_server",
        env.run(&["flow", "push", s(&ok)]),
        &paths
    );
    flowrt_snapshot!(
        "flow_list_without_server",
        env.run(&["flow", "list"]),
        &paths
    );
}

#[test]
fn run_refusals() {
    let env = Env::new();
    let (d, ok) = flow("batch_trivial");
    let tmp = d.path();
    let paths = [(tmp, "[TMP]"), (env.home.path(), "[HOME]")];
    let data = tmp.join("data.jsonl");
    std::fs::write(&data, "{\"x\": 1}\n{\"x\": 2}\n").unwrap();
    let bad_data = tmp.join("bad.jsonl");
    std::fs::write(&bad_data, "{\"x\": 1}\n{\"x\": 2\n").unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec!["run", "create", "--flow", s(&ok)];
        args.extend_from_slice(extra);
        env.run(&args)
    };

    flowrt_snapshot!(
        "run_create_without_data",
        env.run(&["run", "create", "--flow", s(&ok)]),
        &paths
    );
    flowrt_snapshot!(
        "run_create_missing_data_file",
        create(&["--data", s(&tmp.join("nope.jsonl"))]),
        &paths
    );
    flowrt_snapshot!(
        "run_create_bad_jsonl_line",
        create(&["--data", s(&bad_data)]),
        &paths
    );
    flowrt_snapshot!(
        "run_create_missing_flow",
        env.run(&[
            "run",
            "create",
            "--flow",
            s(&tmp.join("nope")),
            "--data",
            s(&data)
        ]),
        &paths
    );
    flowrt_snapshot!(
        "run_create_mapping_without_equals",
        create(&["--data", s(&data), "--column-mapping", "x"]),
        &paths
    );
    // Not a refusal (promptflow runs it too) but a warning; the run's record on stdout is
    // left out, as it carries the run's time-stamped name and pid.
    let mapped = create(&[
        "--data",
        s(&data),
        "--name",
        "mapped",
        "--column-mapping",
        "x=${data.x}",
        "--column-mapping",
        "question=${data.x}",
    ]);
    flowrt_snapshot!(
        "run_create_mapping_to_unknown_input",
        Run {
            stdout: String::new(),
            ..mapped
        },
        &paths
    );
    flowrt_snapshot!(
        "run_create_unknown_base_run",
        create(&["--data", s(&data), "--run", "no_such_run"]),
        &paths
    );
    flowrt_snapshot!(
        "run_show_unknown",
        env.run(&["run", "show", "no_such_run"]),
        &paths
    );
    flowrt_snapshot!(
        "run_show_details_unknown",
        env.run(&["run", "show-details", "no_such_run"]),
        &paths
    );
    flowrt_snapshot!(
        "run_delete_unknown",
        env.run(&["run", "delete", "no_such_run"]),
        &paths
    );
}

#[test]
fn connection_data_and_env_refusals() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let paths = [(tmp.path(), "[TMP]"), (env.home.path(), "[HOME]")];
    let write = |name: &str, text: &str| {
        let file = tmp.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    };
    let bad_yaml = write("bad.yaml", "name: x\ntype: [open_ai\n");
    let unknown_type = write(
        "unknown.yaml",
        "name: x\ntype: carrier_pigeon\napi_key: k\n",
    );
    let no_name = write("noname.yaml", "type: open_ai\napi_key: k\n");
    let reqs = write("requirements.txt", "requests\n");

    flowrt_snapshot!(
        "connection_create_missing_file",
        env.run(&[
            "connection",
            "create",
            "--file",
            s(&tmp.path().join("nope.yaml"))
        ]),
        &paths
    );
    flowrt_snapshot!(
        "connection_create_bad_yaml",
        env.run(&["connection", "create", "--file", s(&bad_yaml)]),
        &paths
    );
    flowrt_snapshot!(
        "connection_create_unknown_type",
        env.run(&["connection", "create", "--file", s(&unknown_type)]),
        &paths
    );
    flowrt_snapshot!(
        "connection_create_without_name",
        env.run(&["connection", "create", "--file", s(&no_name)]),
        &paths
    );
    flowrt_snapshot!(
        "connection_create_workspace_without_server",
        env.run(&["connection", "create", "--file", s(&no_name), "--workspace"]),
        &paths
    );
    flowrt_snapshot!(
        "connection_create_shared_without_workspace",
        env.run(&["connection", "create", "--file", s(&no_name), "--shared"]),
        &paths
    );
    flowrt_snapshot!(
        "connection_show_unknown",
        env.run(&["connection", "show", "no_such_conn"]),
        &paths
    );
    flowrt_snapshot!(
        "connection_delete_unknown",
        env.run(&["connection", "delete", "no_such_conn"]),
        &paths
    );

    flowrt_snapshot!(
        "data_push_without_server",
        env.run(&["data", "push", s(&reqs)]),
        &paths
    );

    flowrt_snapshot!(
        "env_create_invalid_name",
        env.run(&["env", "create", "my env!", "--requirements", s(&reqs)]),
        &paths
    );
    flowrt_snapshot!(
        "env_create_named_default",
        env.run(&["env", "create", "default", "--requirements", s(&reqs)]),
        &paths
    );
    flowrt_snapshot!(
        "env_create_unknown_base",
        env.run(&[
            "env",
            "create",
            "mine",
            "--requirements",
            s(&reqs),
            "--from",
            "default@0.0.1"
        ]),
        &paths
    );
    flowrt_snapshot!(
        "env_create_missing_requirements",
        env.run(&[
            "env",
            "create",
            "mine",
            "--requirements",
            s(&tmp.path().join("nope.txt"))
        ]),
        &paths
    );
    flowrt_snapshot!(
        "env_gc_keep_not_a_number",
        env.run(&["env", "gc", "--keep", "all"]),
        &paths
    );
}

#[test]
fn server_commands_without_a_server() {
    let env = Env::new();
    let paths = [(env.home.path(), "[HOME]")];
    for (name, args) in [
        ("session_list_without_server", &["session", "list"][..]),
        ("endpoint_list_without_server", &["endpoint", "list"]),
        (
            "deployment_list_without_server",
            &["deployment", "list", "support"],
        ),
        ("user_list_without_server", &["user", "list"]),
        ("token_list_without_server", &["token", "list"]),
        ("role_list_without_server", &["role", "list"]),
        ("compute_list_without_server", &["compute", "list"]),
        ("identity_list_without_server", &["identity", "list"]),
    ] {
        flowrt_snapshot!(name, env.run(args), &paths);
    }
    // A server that is named but not there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    flowrt_snapshot!(
        "session_list_server_down",
        env.run_with_env(&["session", "list"], &[("FLOWRT_SERVER", &url)]),
        &paths
    );
    flowrt_snapshot!(
        "session_list_server_not_a_url",
        env.run_with_env(&["session", "list"], &[("FLOWRT_SERVER", "localhost 8080")]),
        &paths
    );
}

#[test]
fn server_refusals() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let paths = [(tmp.path(), "[TMP]"), (server.home(), "[HOME]")];
    server.ok(&["endpoint", "create", "support"]);

    // Sessions.
    flowrt_snapshot!(
        "session_show_unknown",
        server.cli(&["session", "show", "s-nosuchsession"]),
        &paths
    );
    flowrt_snapshot!(
        "session_stop_unknown",
        server.cli(&["session", "stop", "s-nosuchsession"]),
        &paths
    );

    // Endpoints and deployments.
    flowrt_snapshot!(
        "endpoint_show_unknown",
        server.cli(&["endpoint", "show", "no-such-endpoint"]),
        &paths
    );
    flowrt_snapshot!(
        "endpoint_create_invalid_name",
        server.cli(&["endpoint", "create", "Bad Name!"]),
        &paths
    );
    flowrt_snapshot!(
        "endpoint_create_existing",
        server.cli(&["endpoint", "create", "support"]),
        &paths
    );
    flowrt_snapshot!(
        "endpoint_update_traffic_not_a_number",
        server.cli(&["endpoint", "update", "support", "--traffic", "blue=lots"]),
        &paths
    );
    flowrt_snapshot!(
        "endpoint_update_traffic_unknown_deployment",
        server.cli(&["endpoint", "update", "support", "--traffic", "blue=100"]),
        &paths
    );
    flowrt_snapshot!(
        "endpoint_keys_unknown_key",
        server.cli(&["endpoint", "keys", "support", "--regenerate", "tertiary"]),
        &paths
    );
    flowrt_snapshot!(
        "deployment_create_target_without_slash",
        server.cli(&["deployment", "create", "support", "--flow", "qa@v1"]),
        &paths
    );
    flowrt_snapshot!(
        "deployment_create_unknown_flow",
        server.cli(&["deployment", "create", "support/blue", "--flow", "qa@v1"]),
        &paths
    );
    flowrt_snapshot!(
        "deployment_show_unknown",
        server.cli(&["deployment", "show", "support/blue"]),
        &paths
    );

    // Flows and data in the workspace.
    flowrt_snapshot!(
        "flow_show_unknown",
        server.cli(&["flow", "show", "no_such_flow"]),
        &paths
    );
    flowrt_snapshot!(
        "flow_push_missing_folder",
        server.cli(&["flow", "push", s(&tmp.path().join("nope"))]),
        &paths
    );
    flowrt_snapshot!(
        "data_push_missing_file",
        server.cli(&["data", "push", s(&tmp.path().join("nope.jsonl"))]),
        &paths
    );

    // Users, tokens, roles, computes, identities.
    flowrt_snapshot!(
        "user_create_invalid_name",
        server.cli(&["user", "create", "Bad Name!"]),
        &paths
    );
    flowrt_snapshot!(
        "token_revoke_unknown",
        server.cli(&["token", "revoke", "t-nosuchtoken"]),
        &paths
    );
    flowrt_snapshot!(
        "role_assign_unknown_role",
        server.cli(&["role", "assign", "owner", "emperor"]),
        &paths
    );
    flowrt_snapshot!(
        "compute_start_unknown",
        server.cli(&["compute", "start", "no-such-compute"]),
        &paths
    );
    flowrt_snapshot!(
        "identity_create_unset_variable",
        server.cli(&[
            "identity",
            "create",
            "feed",
            "--feed-token-env",
            "FLOWRT_NO_SUCH_VARIABLE",
            "--feed-host",
            "pkgs.example.com"
        ]),
        &paths
    );
}

#[test]
fn help_teaches_each_command() {
    let env = Env::new();
    let paths = [(env.home.path(), "[HOME]")];
    flowrt_snapshot!("help", env.run(&["--help"]), &paths);
    flowrt_snapshot!("unknown_command", env.run(&["flwo", "test"]), &paths);
    for cmd in [
        "flow",
        "run",
        "connection",
        "data",
        "env",
        "server",
        "session",
        "compute",
        "endpoint",
        "deployment",
        "identity",
        "user",
        "token",
        "role",
        "audit",
    ] {
        flowrt_snapshot!(format!("help_{cmd}"), env.run(&[cmd, "--help"]), &paths);
    }
}
