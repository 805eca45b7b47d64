//! `flowrt`: the command line. Parses arguments (`cli`), hands each command to its resource's
//! module (`commands`), and maps the outcome to an exit code and `error:` / `hint:` lines.

// The runtime the roles share, under the names the commands use.
use flowrt_runtime::{flex, includes, invoker, otel, runs};

mod cli;
mod client;
mod commands;
mod fmt;
mod push;

use clap::Parser;
use cli::{Cli, Command};
use commands::*;
use std::process::ExitCode;

// mimalloc: lines are built on the async threads and their records and spans freed on others
// (the writer, the exporter's thread); glibc's allocator pays for each such free, and on the
// bench's 10,000-line batch that was most of what exporting traces cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        // A command that fails before (or instead of) running anything had bad input: the flow,
        // its inputs, the data, a mapping, the command line, or a server that refused it. A run
        // that ran and failed returns its own code (1, or 130 when canceled) as `Ok`.
        Err(e) => {
            print_error(&e);
            ExitCode::from(2)
        }
    }
}

/// `flowrt run list | head`: once the reader has gone, stop quietly with the status SIGPIPE
/// gives (141), as Unix tools do, not with a panic and its backtrace. SIGPIPE itself stays
/// ignored (Rust's default): a Python worker that dies must be an error the engine reports,
/// not a signal that ends a batch run while it writes to the worker's pipe.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// `error: ...` then any `hint: ...` lines the message carries.
fn print_error(e: &anyhow::Error) {
    let mut text = format!("{e}");
    for cause in e.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    eprintln!("error: {text}");
}

/// Each command to the module of its resource; the exit code it ends with.
fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Flow(cmd) => flow::run(cmd),
        Command::Run(cmd) => run::run(cmd),
        Command::Connection(cmd) => connection::run(cmd),
        Command::Data(cmd) => data::run(cmd),
        Command::Env(cmd) => env::run(cmd),
        Command::Agent(args) => agent::run(args),
        Command::SealExec(args) => agent::seal_exec(args),
        Command::Server(args) => server::run(args),
        Command::Session { server, command } => session::run(command, server.server.as_deref()),
        Command::Endpoint { server, command } => endpoint::run(command, server.server.as_deref()),
        Command::Deployment { server, command } => {
            deployment::run(command, server.server.as_deref())
        }
        Command::Identity { server, command } => identity::run(command, server.server.as_deref()),
        Command::Compute { server, command } => compute::run(command, server.server.as_deref()),
        Command::User { server, command } => team::user(command, server.server.as_deref()),
        Command::Token { server, command } => team::token(command, server.server.as_deref()),
        Command::Role { server, command } => team::role(command, server.server.as_deref()),
        Command::Audit { server, command } => team::audit(command, server.server.as_deref()),
    }
}
