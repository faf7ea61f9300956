//! `boxd image build|ls|rm|import|verify`: the operator's image tools.
//!
//! Building, importing, listing and verifying work on the data
//! directory's image store directly (no daemon needed; a running daemon
//! sees a new image at once, and the store's build lock keeps two builds
//! apart). Removing needs to know every box and snapshot on the host, which
//! only the runtime that owns them knows: with `boxd serve` running it is
//! asked over the API (`DELETE /v2/images/{name}`), otherwise the runtime
//! is opened here, under the daemon's lock so the two never run at once.
//!
//! Owns how progress and images are shown. Never prints a mirror's
//! credentials (the builder redacts them) and never removes an image
//! behind a box's back.

use super::{out, table};
use anyhow::{Context, Result};
use boxd_runtime::image::{debian, progress::Event, Store};
use clap::Subcommand;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build a runtime's image from Debian packages (needs `mmdebstrap`);
    /// a rebuild with nothing changed reuses every layer.
    Build {
        /// debian, node, python, golang, ruby or rust (an `-alpine` name
        /// builds the same image).
        runtime: String,
        /// The Debian mirror [default: http://deb.debian.org/debian].
        #[arg(long, env = "BOXD_DEBIAN_MIRROR")]
        mirror: Option<String>,
        /// The Debian suite [default: trixie].
        #[arg(long)]
        suite: Option<String>,
        /// The npm registry Node.js, npm and Deno come from [default:
        /// https://registry.npmjs.org].
        #[arg(long, env = "BOXD_NPM_REGISTRY")]
        npm_registry: Option<String>,
        /// PEM bundle downloads during the build trust [default: the
        /// host's system bundle, which carries a corporate proxy's CAs].
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// Build every layer again.
        #[arg(long)]
        no_cache: bool,
        /// Show every line the package manager prints.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// List images: name, digest, size, created.
    Ls,
    /// Remove an image (refused while a box or snapshot uses it) and the
    /// layers nothing else uses.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Import an OCI image layout (a directory or its tar) or a `docker
    /// save` tarball as image NAME.
    Import {
        source: PathBuf,
        /// The image's name (what `runtime` asks for).
        #[arg(long)]
        name: String,
    },
    /// Read every layer of the images again and check their digests.
    Verify {
        /// Images to check [default: all].
        names: Vec<String>,
    },
}

/// What `boxd image rm` needs besides the store.
pub struct RemoveVia<'a> {
    pub data_dir: &'a Path,
    pub conn: &'a super::Connection,
    /// Opens the runtime here (when no daemon runs).
    pub open_runtime: &'a dyn Fn() -> Result<boxd_runtime::Runtime>,
}

pub async fn run(
    data_dir: &Path,
    json: bool,
    cmd: &ImageCommand,
    via: RemoveVia<'_>,
) -> Result<i32> {
    let store = || -> Result<Store> {
        let root = data_dir.join("images");
        Store::open(&root).with_context(|| format!("open the image store {}", root.display()))
    };
    match cmd {
        ImageCommand::Build {
            runtime,
            mirror,
            suite,
            npm_registry,
            ca_bundle,
            no_cache,
            verbose,
        } => {
            let mut cfg = debian::DebianConfig::default();
            if let Some(m) = mirror {
                cfg.mirror = m.clone();
            }
            if let Some(s) = suite {
                cfg.suite = s.clone();
            }
            if let Some(r) = npm_registry {
                cfg.npm_registry = r.clone();
            }
            if let Some(b) = ca_bundle {
                anyhow::ensure!(
                    b.is_file(),
                    "--ca-bundle {} is not a readable file",
                    b.display()
                );
                cfg.ca_bundle = Some(b.clone());
            }
            let name = boxd_runtime::image::runtimes::image_for(runtime).unwrap_or(runtime);
            let store = store()?;
            let mut shown = Shown::new(*verbose);
            let started = Instant::now();
            // The build blocks this (single-threaded) command: nothing
            // else runs meanwhile.
            let image = debian::build(
                &store,
                &cfg,
                name,
                debian::BuildOptions {
                    no_cache: *no_cache,
                },
                &mut |e| shown.event(e),
            );
            shown.finish();
            let image = image?;
            let info = store.list()?.into_iter().find(|i| i.digest == image.digest);
            let bytes = info.map(|i| i.bytes).unwrap_or(0);
            if json {
                out(format!(
                    "{}\n",
                    serde_json::json!({
                        "name": image.name, "digest": image.digest, "bytes": bytes,
                        "seconds": started.elapsed().as_secs_f64(),
                    })
                ))?;
            } else {
                out(format!(
                    "built {} {} ({}) in {}\n",
                    image.name,
                    short(&image.digest),
                    table::bytes(bytes),
                    elapsed(started)
                ))?;
            }
            Ok(0)
        }
        ImageCommand::Ls => {
            let images = store()?.list()?;
            if json {
                out(format!("{}\n", serde_json::to_string(&images)?))?;
                return Ok(0);
            }
            let now = table::now_secs();
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        short(&i.digest),
                        table::bytes(i.bytes),
                        i.layers.to_string(),
                        table::age(now, i64::try_from(i.created).unwrap_or(i64::MAX)),
                        i.source.clone(),
                    ]
                })
                .collect();
            out(table::render(
                &["NAME", "DIGEST", "SIZE", "LAYERS", "CREATED", "SOURCE"],
                &rows,
            ))?;
            Ok(0)
        }
        ImageCommand::Verify { names } => {
            let store = store()?;
            let images = store.list()?;
            let mut bad = 0;
            for i in &images {
                if !names.is_empty() && !names.contains(&i.name) {
                    continue;
                }
                let started = Instant::now();
                let result = verify(&store, &i.digest);
                match result {
                    Ok(n) => out(format!(
                        "{}: ok ({n} layers, {})\n",
                        i.name,
                        elapsed(started)
                    ))?,
                    Err(e) => {
                        bad += 1;
                        out(format!("{}: CORRUPT: {e}\n", i.name))?;
                    }
                }
            }
            if let Some(missing) = names.iter().find(|n| !images.iter().any(|i| &i.name == *n)) {
                anyhow::bail!("no image named {missing:?}");
            }
            Ok(if bad > 0 { 1 } else { 0 })
        }
        ImageCommand::Import { source, name } => {
            let store = store()?;
            let mut shown = Shown::new(false);
            let started = Instant::now();
            let image =
                boxd_runtime::image::oci::import(&store, source, name, &mut |e| shown.event(e));
            shown.finish();
            let image = image?;
            out(format!(
                "imported {} {} in {}\n",
                image.name,
                short(&image.digest),
                elapsed(started)
            ))?;
            Ok(0)
        }
        ImageCommand::Rm { names } => {
            for name in names {
                let freed = remove(&via, name).await?;
                out(format!("removed {name} ({} freed)\n", table::bytes(freed)))?;
            }
            Ok(0)
        }
    }
}

/// Removes one image, through the daemon when it runs; the bytes freed.
async fn remove(via: &RemoveVia<'_>, name: &str) -> Result<u64> {
    match boxd_server::try_lock_data_dir(via.data_dir)? {
        Some(_lock) => {
            let rt = (via.open_runtime)()?;
            let collected = rt.remove_image(name)?;
            Ok(collected.bytes)
        }
        None => {
            let key = super::client::resolve_key(via.conn.key.as_deref(), via.data_dir)?;
            let client = super::client::Client::new(&via.conn.url, key)?;
            let url = client.url(&["v2", "images", name]);
            let answer: serde_json::Value = client
                .json(client.request(reqwest::Method::DELETE, url))
                .await
                .context("the daemon is running: asked it to remove the image")?;
            Ok(answer["freed_bytes"].as_u64().unwrap_or(0))
        }
    }
}

/// Checks every stored layer of the image `digest`; how many there were.
fn verify(store: &Store, digest: &str) -> Result<usize> {
    let m = store.manifest(digest)?;
    let mut n = 0;
    for l in &m.layers {
        if let boxd_runtime::image::LayerRef::Stored { digest, .. } = l {
            store.verify_layer(digest)?;
            n += 1;
        }
    }
    Ok(n)
}

/// `sha256:0123456789ab`.
fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

fn elapsed(since: Instant) -> String {
    let s = since.elapsed().as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s as u64) / 60, (s as u64) % 60)
    }
}

/// Progress on stderr: on a terminal, each step as a line and a status
/// line under it (packages, bytes, elapsed) redrawn in place; otherwise
/// plain lines only.
struct Shown {
    tty: bool,
    verbose: bool,
    started: Instant,
    step: String,
    step_started: Instant,
    packages: Option<u64>,
    bytes: u64,
    status_drawn: bool,
}

impl Shown {
    fn new(verbose: bool) -> Shown {
        Shown {
            tty: std::io::stderr().is_terminal(),
            verbose,
            started: Instant::now(),
            step: String::new(),
            step_started: Instant::now(),
            packages: None,
            bytes: 0,
            status_drawn: false,
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Step { step } => {
                self.line(&format!("==> {step}"));
                self.step = step;
                self.step_started = Instant::now();
                self.packages = None;
                self.bytes = 0;
            }
            Event::Cached { step } => self.line(&format!("==> {step}: cached")),
            Event::Packages { count } => {
                self.packages = Some(count);
                if !self.tty {
                    self.line(&format!("    {count} packages"));
                }
            }
            Event::Bytes { bytes } => self.bytes = bytes,
            Event::Log { line } => {
                if self.verbose {
                    self.line(&format!("    {line}"));
                }
            }
        }
        self.status();
    }

    /// Prints a line above the status line.
    fn line(&mut self, s: &str) {
        let mut err = std::io::stderr().lock();
        if self.status_drawn {
            let _ = write!(err, "\r\x1b[K");
            self.status_drawn = false;
        }
        let _ = writeln!(err, "{s}");
    }

    fn status(&mut self) {
        if !self.tty || self.step.is_empty() {
            return;
        }
        let mut parts = vec![format!("step {}", elapsed(self.step_started))];
        if let Some(p) = self.packages {
            parts.push(format!("{p} packages"));
        }
        if self.bytes > 0 {
            parts.push(table::bytes(self.bytes));
        }
        parts.push(format!("total {}", elapsed(self.started)));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K    {}", parts.join(" · "));
        let _ = err.flush();
        self.status_drawn = true;
    }

    fn finish(&mut self) {
        if self.status_drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.status_drawn = false;
        }
    }
}
