//! The boxd daemon: the HTTP API (axum), auth, the box state machine,
//! streaming, audit and metrics.

use std::path::PathBuf;

/// `boxd serve` options.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "BOXD_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
}

pub fn serve(_args: ServeArgs, _data_dir: PathBuf, _agent: PathBuf) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
