//! `boxd`: the single binary. `boxd serve` runs the daemon; the client
//! commands (`create`, `ls`, `exec`, `cp`, …) talk to it over HTTP;
//! `boxd keys` manages API keys in the data directory; `boxd run` and
//! `boxd info` drive the box runtime directly, without a daemon.
//! Never a rule of a box: the core owns those, the CLI only asks over HTTP.

mod cli;

use anyhow::{bail, Context, Result};
use boxd_agent::protocol::SpawnRequest;
use boxd_agent::Output;
use boxd_runtime::{BoxSpec, Limits, Runtime, RuntimeConfig};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "boxd",
    version,
    about = "Self-hosted sandboxes: isolated Linux boxes"
)]
struct Cli {
    /// Where images, boxes and state live.
    #[arg(
        long,
        env = "BOXD_DATA_DIR",
        default_value = "/var/lib/boxd",
        global = true
    )]
    data_dir: PathBuf,
    /// The boxd-agent executable (default: next to this binary).
    #[arg(long, env = "BOXD_AGENT", global = true)]
    agent: Option<PathBuf>,
    #[command(flatten)]
    conn: cli::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one command in a fresh box, stream its output, destroy the box.
    Run {
        /// Runtime or image: host, or a built image (node, python, golang, ruby, rust, …).
        #[arg(long, default_value = "host")]
        runtime: String,
        /// Environment variable for the box (repeatable).
        #[arg(long = "env", short = 'e', value_name = "K=V")]
        env: Vec<String>,
        /// Memory limit in MiB.
        #[arg(long)]
        memory_mib: Option<u64>,
        /// CPU limit in thousandths of a core (1000 = one core).
        #[arg(long)]
        cpu_millis: Option<u64>,
        /// Run as this user inside the box (default root).
        #[arg(long)]
        user: Option<String>,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Show what this host offers: cgroup mode, runtimes, KVM.
    Info,
    /// Run the daemon: the HTTP API on --listen.
    Serve(boxd_server::ServeArgs),
    /// Manage API keys (operator tool: opens the data directory directly).
    Keys {
        #[command(subcommand)]
        command: cli::KeysCommand,
    },
    /// Build, list, import and remove images (operator tool: works on the
    /// data directory's image store).
    Image {
        #[command(subcommand)]
        command: cli::ImageCommand,
    },
    /// Add a new master key and re-seal every stored secret value (and
    /// boxd's CA key) under it. Operator tool: the daemon must be stopped.
    RotateMasterKey {
        /// The master key file [default: <data dir>/master.key].
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn agent_path(cli: &Cli) -> Result<PathBuf> {
    Ok(match &cli.agent {
        Some(a) => a.clone(),
        None => std::env::current_exe()
            .context("locate the boxd binary")?
            .with_file_name("boxd-agent"),
    })
}

fn runtime(cli: &Cli) -> Result<Runtime> {
    Runtime::new(RuntimeConfig::new(&cli.data_dir, agent_path(cli)?))
        .context("start the box runtime (boxd needs root)")
}

async fn run(rt: &Runtime, spec: BoxSpec, req: SpawnRequest) -> Result<i32> {
    let b = rt.create(&spec).context("create the box")?;
    let result = async {
        let mut p = b.spawn(req).await?;
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        while let Some(o) = p.next().await? {
            match o {
                Output::Stdout(d) => {
                    out.write_all(&d)?;
                    out.flush()?;
                }
                Output::Stderr(d) => {
                    err.write_all(&d)?;
                    err.flush()?;
                }
                Output::Exit(s) => return Ok(s.code),
            }
        }
        bail!("the box's agent closed the stream without an exit status")
    }
    .await;
    rt.destroy(b).context("destroy the box")?;
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve(args) = &cli.command {
        let result = agent_path(&cli)
            .and_then(|agent| boxd_server::serve(args.clone(), cli.data_dir.clone(), agent));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("boxd serve: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOXD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("boxd: start the async runtime: {e}");
            return ExitCode::from(125);
        }
    };
    rt.block_on(client_main(cli))
}

async fn client_main(cli: Cli) -> ExitCode {
    let result = async {
        match &cli.command {
            Command::Serve(_) => unreachable!("handled in main"),
            Command::Keys { command } => cli::run_keys(&cli.data_dir, cli.conn.json, command),
            Command::Image { command } => {
                cli::run_images(&cli.data_dir, &cli.conn, command, &|| runtime(&cli)).await
            }
            Command::RotateMasterKey { master_key_file } => {
                let file = master_key_file
                    .clone()
                    .unwrap_or_else(|| cli.data_dir.join("master.key"));
                let r = boxd_server::rotate_master_key(&cli.data_dir, &file)?;
                println!(
                    "new master key {}: {} stored values re-sealed; key ids in use: {}",
                    r.new_key,
                    r.resealed,
                    r.in_use.join(", ")
                );
                Ok(0)
            }
            Command::Client(cmd) => cli::run_client(&cli.conn, &cli.data_dir, cmd).await,
            Command::Run {
                runtime: rt_name,
                env,
                memory_mib,
                cpu_millis,
                user,
                command,
            } => {
                let rt = runtime(&cli)?;
                let mut spec = BoxSpec::new(format!("run-{}", std::process::id()));
                spec.runtime = rt_name.clone();
                spec.env = cli::parse_env(env)?;
                spec.limits = Limits {
                    memory_bytes: memory_mib.map(|m| m << 20),
                    cpu_millis: *cpu_millis,
                    ..spec.limits
                };
                let mut req = SpawnRequest::argv(command.clone());
                req.user = user.clone();
                run(&rt, spec, req).await
            }
            Command::Info => {
                let rt = runtime(&cli)?;
                println!("data dir: {}", cli.data_dir.display());
                println!("cgroups:  {}", rt.cgroup_mode());
                let runtimes = rt.runtimes()?;
                println!("runtimes: {}", runtimes.join(", "));
                let unbuilt: Vec<&str> = boxd_runtime::image::runtimes::RUNTIMES
                    .into_iter()
                    .filter(|r| !runtimes.iter().any(|n| n == r))
                    .collect();
                if !unbuilt.is_empty() {
                    println!("to build: {} (boxd image build <name>)", unbuilt.join(", "));
                }
                let kvm = std::path::Path::new("/dev/kvm").exists();
                println!(
                    "kvm:      {}",
                    if kvm { "/dev/kvm present" } else { "absent" }
                );
                Ok(0)
            }
        }
    }
    .await;
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("boxd: {e:#}");
            ExitCode::from(125)
        }
    }
}
