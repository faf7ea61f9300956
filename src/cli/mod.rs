//! The CLI's API client commands (`boxd create`, `ls`, `exec`, `sh`, `cp`,
//! `rm`, `status`) and the local key management (`boxd keys`).
//!
//! Client commands talk only to the HTTP API (`--url`/`BOXD_URL`,
//! `--key`/`BOXD_API_KEY`); they never touch the runtime or the store.
//! `boxd keys` is the exception: it is the operator's tool and opens the
//! data directory's database directly.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// How a client command reaches the daemon.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// The daemon's address.
    #[arg(
        long,
        env = "BOXD_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub url: String,
    /// API key (default: `<data-dir>/admin.key` when readable).
    #[arg(long, env = "BOXD_API_KEY", global = true, hide_env_values = true)]
    pub key: Option<String>,
    /// Print JSON instead of human tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create a box and print its id.
    Create {
        #[arg(long)]
        name: Option<String>,
        /// Runtime or image: host, node, python.
        #[arg(long)]
        runtime: Option<String>,
        /// small, medium or large.
        #[arg(long)]
        size: Option<String>,
        /// Environment variable for the box (repeatable).
        #[arg(long = "env", short = 'e', value_name = "K=V")]
        env: Vec<String>,
        /// Label (repeatable).
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// List boxes.
    Ls {
        /// Only boxes with this label.
        #[arg(long, short = 'l')]
        label: Option<String>,
    },
    /// Run a command in a box, streaming its output; exits with its exit code.
    Exec {
        /// Box id or name.
        #[arg(name = "BOX")]
        target: String,
        /// Working directory (relative to /workspace/home or absolute).
        #[arg(long, short = 'w')]
        workdir: Option<String>,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Interactive shell in a box.
    Sh {
        #[arg(name = "BOX")]
        target: String,
    },
    /// Copy files and folders between here and a box: `BOX:path` names a box side.
    Cp { src: String, dest: String },
    /// Delete boxes (irreversible).
    Rm {
        #[arg(required = true, name = "BOX")]
        targets: Vec<String>,
    },
    /// Show a box's status.
    Status {
        #[arg(name = "BOX")]
        target: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key and print it once.
    Create {
        /// A name to recognise the key by.
        #[arg(long, default_value = "cli")]
        name: String,
        /// The team the key belongs to (created if missing).
        #[arg(long, default_value = "default")]
        team: String,
    },
    /// List keys (never their values).
    List {
        #[arg(long, default_value = "default")]
        team: String,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[arg(long, default_value = "default")]
        team: String,
    },
}

/// Runs a client command; returns the process exit code.
pub async fn run_client(
    _conn: &Connection,
    _data_dir: &std::path::Path,
    _cmd: &ClientCommand,
) -> Result<i32> {
    bail!("client commands are not built yet")
}

/// Runs `boxd keys …` against `<data_dir>/boxd.db`.
pub fn run_keys(_data_dir: &std::path::Path, _json: bool, _cmd: &KeysCommand) -> Result<i32> {
    bail!("key commands are not built yet")
}

/// Where the daemon saves the admin key on first start.
pub fn admin_key_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("admin.key")
}
