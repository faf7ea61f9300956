//! The CLI's API client commands (`boxd create`, `ls`, `exec`, `sh`, `cp`,
//! `rm`, `status`, `headers`, `snapshot`) and the local key management
//! (`boxd keys`).
//!
//! Client commands talk only to the HTTP API (`--url`/`BOXD_URL`,
//! `--key`/`BOXD_API_KEY`); they never touch the runtime or the store.
//! `boxd keys` and `boxd image` are the exceptions: they are the
//! operator's tools and open the data directory's database and image store
//! directly.
//!
//! This module owns the command line's shape (clap definitions) and the
//! error reporting of these commands: every failure is printed as
//! `boxd: <why>` on stderr and exits 1 (`exec` exits with the command's
//! code once it ran). The work is in the submodules: `client` (HTTP, key,
//! errors), `commands`, `cp`, `headers`, `keys`, `snapshots`, `trailer`
//! (exec-stream parsing) and `table` (human output).

mod client;
mod commands;
pub use commands::parse_env;
mod cp;
mod headers;
mod images;
pub use images::ImageCommand;
mod keys;
mod snapshots;
mod table;
mod trailer;

use anyhow::Result;
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
        /// Start from this snapshot (id or name): its files, env and
        /// config; the other options here override its config.
        #[arg(long, value_name = "SNAPSHOT")]
        from_snapshot: Option<String>,
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
        /// Wait for the command to end, then print its stdout and stderr
        /// separately (the stream interleaves them). Implied by --json,
        /// which prints the result object.
        #[arg(long)]
        no_stream: bool,
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
    /// The team's attach headers: headers boxd's proxy injects into HTTPS
    /// requests to matching hosts from boxes created afterwards.
    Headers {
        #[command(subcommand)]
        command: HeadersCommand,
    },
    /// Snapshots: a box's files and config, kept to start new boxes from
    /// (`boxd create --from-snapshot`).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Snapshot a box (a running box is frozen for the copy) and print the
    /// snapshot's id.
    Create {
        /// Box id or name.
        #[arg(name = "BOX")]
        target: String,
        /// Unique among the team's snapshots (default: the snapshot's id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the team's snapshots, or those taken from one box.
    Ls {
        /// Only snapshots of this box (id or name).
        #[arg(name = "BOX")]
        target: Option<String>,
    },
    /// Delete snapshots (boxes started from one keep working).
    Rm {
        /// Snapshot ids or names.
        #[arg(required = true, name = "ID")]
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum HeadersCommand {
    /// Set the headers of a host pattern (replacing what it had). Values
    /// are read from stdin, one line per header name, in order — never
    /// from the command line, where other users and shell history see
    /// them. Example: `printf '%s\n' "$STRIPE_KEY" | boxd headers set
    /// api.stripe.com Authorization`.
    Set {
        /// `api.example.com` or `*.example.com` (lowercase).
        pattern: String,
        /// Header names; their values come from stdin.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List host patterns and header names (values are never shown).
    Ls,
    /// Remove every header of a host pattern.
    Rm { pattern: String },
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
    conn: &Connection,
    data_dir: &std::path::Path,
    cmd: &ClientCommand,
) -> Result<i32> {
    let result = async {
        let key = client::resolve_key(conn.key.as_deref(), data_dir)?;
        let client = client::Client::new(&conn.url, key)?;
        commands::run(&client, conn.json, cmd).await
    }
    .await;
    Ok(report(result))
}

/// Runs `boxd keys …` against `<data_dir>/boxd.db`.
pub fn run_keys(data_dir: &std::path::Path, json: bool, cmd: &KeysCommand) -> Result<i32> {
    Ok(report(keys::run(data_dir, json, cmd)))
}

/// Runs `boxd image …` on `<data_dir>/images` (removal through the
/// daemon when it runs, else through `open_runtime`).
pub async fn run_images(
    data_dir: &std::path::Path,
    conn: &Connection,
    cmd: &ImageCommand,
    open_runtime: &dyn Fn() -> Result<boxd_runtime::Runtime>,
) -> Result<i32> {
    let via = images::RemoveVia {
        data_dir,
        conn,
        open_runtime,
    };
    Ok(report(images::run(data_dir, conn.json, cmd, via).await))
}

/// Exit code after stdout's reader went away, like a shell's SIGPIPE.
const STDOUT_CLOSED_EXIT: i32 = 141;

/// The exit code of a command's result, printing a failure on stderr.
fn report(result: Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => STDOUT_CLOSED_EXIT,
        Err(e) => {
            eprintln!("boxd: {e:#}");
            1
        }
    }
}

/// stdout's reader went away (`boxd ls | head -1`): the command stops
/// quietly instead of failing loudly.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes to stdout and flushes (output must not wait in a buffer while a
/// command streams). A closed pipe is [`StdoutClosed`], not a panic.
fn out(bytes: impl AsRef<[u8]>) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes.as_ref()).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("write to stdout")),
    }
}

/// Where the daemon saves the admin key on first start.
pub fn admin_key_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(boxd_server::ADMIN_KEY_FILE)
}
