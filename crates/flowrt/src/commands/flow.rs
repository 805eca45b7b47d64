//! `flowrt flow ...`: a flow tested, served and checked on this machine (`flow_test`,
//! `flow_serve`, `validate` here), and flows in a server's workspace: pushed, listed, shown, and
//! (`flow_versions`) pulled back to a folder or compared.

use super::{flow_serve, flow_test, flow_versions};
use crate::client::{block, Remote, ServerOpt};
use crate::{flex, includes, invoker};
use anyhow::Result;
use clap::Subcommand;
use flowrt_api::responses::{FlowDetail, FlowVersion};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum FlowCommand {
    /// Run one line of a flow and print its outputs as JSON.
    ///
    /// Example: flowrt flow test ./my_flow --inputs question="What is a DAG?" count=3
    Test(flow_test::TestArgs),
    /// Serve a flow over HTTP (promptflow's contract): POST /score, GET /health, /swagger.json.
    ///
    /// Example: flowrt flow serve ./my_flow --port 8080
    Serve(flow_serve::ServeArgs),
    /// Upload a flow to a server's workspace as its next version (NAME@vN); prints the reference.
    ///
    /// The folder is packed as promptflow packs snapshots: additional_includes merged in,
    /// .gitignore and .amlignore honoured. A folder unchanged since its latest version uploads
    /// nothing. Example: flowrt flow push ./qa --name qa
    Push {
        /// The flow folder (or a .prompty file).
        flow: PathBuf,
        /// The name in the workspace (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        server: ServerOpt,
    },
    /// List the flows in a server's workspace you may see, with their versions.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerOpt,
    },
    /// Show a workspace flow as JSON: inputs, outputs, nodes and edges (what a UI draws).
    Show {
        /// NAME (the latest version) or NAME@vN.
        reference: String,
        #[command(flatten)]
        server: ServerOpt,
    },
    /// Bring a workspace flow's version back to a new or empty folder, to edit it locally and
    /// push it again. Example: flowrt flow pull qa@v3 ./qa
    Pull {
        /// NAME (the latest version) or NAME@vN.
        reference: String,
        /// The folder to create (it may exist if empty; nothing is overwritten).
        dir: PathBuf,
        #[command(flatten)]
        server: ServerOpt,
    },
    /// Show what changed between two versions of a workspace flow, as a unified diff.
    /// Example: flowrt flow diff qa@v1 qa@v2
    Diff {
        /// The older version, NAME@vN.
        from: String,
        /// The newer version, NAME@vN (default: the latest).
        to: Option<String>,
        #[command(flatten)]
        server: ServerOpt,
    },
    /// Check a flow without running it: YAML, references, tool files, cycles.
    Validate {
        /// The flow folder (holding flow.dag.yaml or flow.flex.yaml), that file, or a .prompty
        /// file. A flex flow's entry is imported (in a Python worker) to check its signature.
        flow: PathBuf,
    },
}

/// Each `flow` command to what does it.
pub fn run(cmd: FlowCommand) -> Result<u8> {
    match cmd {
        FlowCommand::Test(args) => flow_test::run(args),
        FlowCommand::Serve(args) => flow_serve::run(args),
        FlowCommand::Validate { flow } => validate(&flow),
        FlowCommand::Push { flow, name, server } => {
            push(&flow, name.as_deref(), server.server.as_deref())
        }
        FlowCommand::List { json, server } => list(json, server.server.as_deref()),
        FlowCommand::Show { reference, server } => show(&reference, server.server.as_deref()),
        FlowCommand::Pull {
            reference,
            dir,
            server,
        } => flow_versions::pull(&reference, &dir, server.server.as_deref()),
        FlowCommand::Diff { from, to, server } => {
            flow_versions::diff(&from, to.as_deref(), server.server.as_deref())
        }
    }
}

/// `flowrt flow push`.
fn push(flow: &Path, name: Option<&str>, server: Option<&str>) -> Result<u8> {
    let home = flowrt_store::flowrt_home();
    let remote = Remote::from_env(server, &home)?;
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| crate::push::default_name(flow));
    block(async move {
        let pushed = crate::push::push(&remote, flow, &name, &home).await?;
        if pushed.unchanged {
            eprintln!("unchanged since {}: nothing uploaded", pushed.reference);
        } else {
            eprintln!("uploaded {} bytes", pushed.bytes_sent);
        }
        println!("{}", pushed.reference);
        Ok(0)
    })
}

/// `flowrt flow list`.
fn list(json_out: bool, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        let flows: Vec<FlowVersion> = remote.get("/api/v1/flows").await?;
        if json_out {
            println!("{}", serde_json::to_string_pretty(&flows)?);
            return Ok(0);
        }
        if flows.is_empty() {
            eprintln!("no flows yet; push one with `flowrt flow push DIR`");
            return Ok(0);
        }
        let mut t = crate::fmt::table(&["FLOW", "FILES", "BYTES", "HASH"], &["FILES", "BYTES"]);
        for f in flows {
            t.add_row(vec![
                f.reference,
                f.files.to_string(),
                f.bytes.to_string(),
                crate::fmt::clip(&f.hash, 19),
            ]);
        }
        crate::fmt::print_table(&t);
        Ok(0)
    })
}

/// `flowrt flow show`.
fn show(reference: &str, server: Option<&str>) -> Result<u8> {
    let remote = Remote::for_server(server)?;
    block(async move {
        let flow: FlowDetail = remote.get(&format!("/api/v1/flows/{reference}")).await?;
        println!("{}", serde_json::to_string_pretty(&flow)?);
        Ok(0)
    })
}

/// `1 input`, `2 inputs`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `flowrt flow validate`: everything that can be checked without running: the YAML, references,
/// tool files, cycles, and that the connections the flow names exist here.
fn validate(flow_dir: &Path) -> Result<u8> {
    let home = flowrt_store::flowrt_home();
    let merged = includes::Merged::new(flow_dir, &home)?;
    let mut flow = merged.load(&Default::default())?;
    let file = if flow_dir.is_file() {
        flow_dir.to_path_buf()
    } else {
        flow_dir.join(flow.file.file_name().unwrap_or_default())
    };
    let connections = invoker::load_connections(&home)?;
    let mut missing: Vec<String> = Vec::new();
    for node in &flow.nodes {
        let named = node.connection.iter().chain(
            // The unified llm tool names its connection as an input.
            node.inputs
                .get("connection")
                .and_then(|v| match v {
                    flowrt_flow::InputValue::Literal(serde_json::Value::String(s)) => Some(s),
                    _ => None,
                })
                .filter(|_| node.kind == flowrt_flow::NodeKind::CustomLlm),
        );
        for conn in named {
            if !connections.contains_key(conn) {
                let at = node.line.map(|l| format!(":{l}")).unwrap_or_default();
                missing.push(format!(
                    "{}{at}: node '{}' uses connection '{conn}', which does not exist",
                    file.display(),
                    node.name
                ));
            }
        }
    }
    for (var, value) in flow.environment_strings() {
        if let Some((conn, _)) = flowrt_flow::env_var_reference(&value) {
            if !connections.contains_key(conn) {
                missing.push(format!(
                    "{}: environment variable {var} reads connection '{conn}', which does not exist",
                    file.display()
                ));
            }
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "{}\nhint: create connections with `flowrt connection create --file CONN.yaml`; `flowrt connection list` shows those in {}",
            missing.join("\n"),
            home.display()
        );
    }
    // A flex flow's entry is imported to check its signature against the YAML.
    if flow.kind == flowrt_flow::FlowKind::Flex {
        flex::check_entry(&mut flow, &home)?;
    }
    println!(
        "{}: valid flow with {}, {} and {}",
        file.display(),
        count(flow.inputs.len(), "input"),
        count(flow.outputs.len(), "output"),
        count(flow.nodes.len(), "node")
    );
    Ok(0)
}
