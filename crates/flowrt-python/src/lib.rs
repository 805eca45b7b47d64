//! Python environments and the long-lived Python tool worker.
//!
//! This crate owns:
//! - **environments**: [`ensure_env`] builds (once per content key, with `uv`) a virtual environment
//!   from a flow's `requirements.txt` under `<FLOWRT_HOME>/envs/<key>/` and returns its interpreter;
//!   [`default_python`] is the interpreter environments are made from; the base's packages
//!   (`base_env.rs`) are built once per machine and linked into each home;
//!   [`ensure_env_with`] adds what sessions need: a base version from the manifest in `base.rs`
//!   ([`BASE_ENVS`], [`EnvRef`]), a custom environment's requirements, conflict checks and
//!   `{private}` feed tokens; [`installed_packages`] and [`gc`] list and prune environments;
//! - **the tool worker**: [`WorkerPool`] runs Python tools (`source.type: code` files and package
//!   tools) in long-lived `python` processes speaking JSON lines, with many concurrent calls per
//!   process, per-call `print()` capture, `log_metric` collection, literal-input conversion by
//!   annotation, timeouts and crash recovery; flex flow entries (`ToolSource::Entry`: import,
//!   signature, class instances with init kwargs, `__aggregate__`); and callbacks from Python to
//!   the host ([`HostCallbacks`], used by `Prompty` and model configurations in the shim);
//! - the embedded Python sources (`python/`): the worker main loop and a `promptflow` compatibility
//!   package, so flows run without promptflow installed.
//!
//! It does not parse flows, schedule nodes, resolve references or store connections: callers hand
//! it ready [`ToolCall`]s (with [`flowrt_api::Connection`] values already looked up).

mod base;
mod base_env;
mod embed;
mod env;
mod worker;

pub use base::{
    find_base, latest_base, python_satisfies, valid_env_name, BaseEnv, EnvRef, EnvRefError,
    BASE_ENVS, DEFAULT_ENV,
};
pub use env::{
    default_python, ensure_env, ensure_env_with, gc, installed_packages,
    installed_packages_by_python, resolve_env, EnvError, EnvOptions, EnvRequest, ExtraRequirements,
    Package, PackageSource, ResolvedEnv, Sandbox, PRIVATE_PLACEHOLDER,
};
pub use worker::{
    Arg, CallError, CallOutput, CallbackFuture, HostCallbacks, Output, ToolCall, ToolSource,
    WorkerPool, WorkerSpec,
};
