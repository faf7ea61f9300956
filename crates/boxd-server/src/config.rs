//! `boxd serve` settings: command-line flags over an optional TOML file
//! over the embedded defaults.
//!
//! Owns parsing and validating the settings; never starts anything.

use anyhow::{bail, Context, Result};
use boxd_net::{NetworkConfig, NetworkSettings};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// API connections served at once unless the config says otherwise: well
/// under the daemon's file limit, which the proxy's sockets share.
const DEFAULT_MAX_API_CONNECTIONS: usize = 2048;

/// `boxd serve` flags. Each one overrides the config file's value.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// Address of the HTTP API [default: 127.0.0.1:7070].
    #[arg(long, env = "BOXD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TOML config file (keys: listen, log_format, cgroup_parent,
    /// max_json_body_bytes, max_upload_bytes, max_api_connections,
    /// header_read_timeout_secs, master_key_file,
    /// idle_pause_secs, and the
    /// [network], [tls] and [storage] tables).
    #[arg(long, env = "BOXD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text or json [default: text].
    #[arg(long)]
    pub log_format: Option<LogFormat>,
    /// Parent cgroup of all boxes [default: boxd].
    #[arg(long)]
    pub cgroup_parent: Option<String>,
}

#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The config file. Unknown keys are an error (a typo must not be ignored).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    cgroup_parent: Option<String>,
    max_json_body_bytes: Option<usize>,
    max_upload_bytes: Option<usize>,
    max_api_connections: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    master_key_file: Option<PathBuf>,
    idle_pause_secs: Option<u64>,
    network: Option<NetworkSettings>,
    tls: Option<TlsSettings>,
    storage: Option<StorageSettings>,
    images: Option<ImageSettings>,
}

/// The `[images]` table: where `boxd image build` (and the API's builds)
/// get packages from.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, default)]
struct ImageSettings {
    /// The Debian mirror [default: http://deb.debian.org/debian].
    mirror: Option<String>,
    /// The Debian suite [default: trixie].
    suite: Option<String>,
    /// The npm registry Node.js, npm and Deno come from [default:
    /// https://registry.npmjs.org].
    npm_registry: Option<String>,
}

/// The `[storage]` table: the pool holding boxes, snapshots and volumes.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, default)]
struct StorageSettings {
    /// `auto` (btrfs if it can be made, else `dir`), `btrfs` or `dir`.
    driver: boxd_runtime::storage::Driver,
    /// Size of the pool image when it is first made, in GiB [default:
    /// 90% of the data directory filesystem's free space].
    size_gib: Option<u64>,
}

/// The `[tls]` table: how the egress proxy verifies upstream servers.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, default)]
struct TlsSettings {
    /// PEM files of roots trusted besides the system's (a test CA).
    extra_roots: Vec<PathBuf>,
    /// The PEM bundle boxes and image builds trust besides boxd's CA
    /// [default: the host's system bundle, so the CAs of a TLS-intercepting
    /// proxy the host trusts are trusted in boxes too].
    box_roots: Option<PathBuf>,
}

/// The settings in effect.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub agent: PathBuf,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub cgroup_parent: String,
    /// Largest JSON request body (413 above it).
    pub max_json_body_bytes: usize,
    /// Largest multipart upload.
    pub max_upload_bytes: usize,
    /// API connections served at once (more are closed on accept).
    pub max_api_connections: usize,
    /// A request's headers must arrive within this many seconds, from the
    /// connection's start or the end of the previous response [default
    /// 100: longer than common clients keep an idle pooled connection].
    pub header_read_timeout_secs: u64,
    /// Box networking (`[network]`), validated.
    pub network: Option<NetworkConfig>,
    /// The file of master keys that seal secret values (outside the
    /// database) [default: `<data>/master.key`].
    pub master_key_file: PathBuf,
    /// `[tls] extra_roots`: roots trusted when verifying upstreams,
    /// besides the system's.
    pub extra_roots: Vec<PathBuf>,
    /// A box without `keep_alive` and with no exec, stream or file call
    /// for this long is paused (0: never) [default: 600].
    pub idle_pause_secs: u64,
    /// `[storage]`: the pool's driver and first size.
    pub storage: boxd_runtime::storage::StorageConfig,
    /// `[tls] box_roots`: what boxes and image builds trust besides boxd's
    /// CA (`None`: the host has no system bundle and none is set).
    pub box_roots: Option<PathBuf>,
    /// `[images]`, with `box_roots` as the builds' trust.
    pub debian: boxd_runtime::image::debian::DebianConfig,
}

impl Config {
    pub fn load(args: &ServeArgs, data_dir: PathBuf, agent: PathBuf) -> Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let cgroup_parent = args
            .cgroup_parent
            .clone()
            .or(file.cgroup_parent)
            .unwrap_or_else(|| "boxd".into());
        if cgroup_parent.is_empty()
            || !cgroup_parent
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("cgroup_parent {cgroup_parent:?} must be one path segment of [A-Za-z0-9._-]");
        }
        let settings = file.network.unwrap_or_default();
        let network = if settings.enabled {
            Some(settings.validate().context("the [network] settings")?)
        } else {
            None
        };
        let tls = file.tls.unwrap_or_default();
        let extra_roots = tls.extra_roots;
        let box_roots = match tls.box_roots {
            Some(path) if !path.is_file() => {
                bail!("[tls] box_roots: {} is not a readable file", path.display())
            }
            Some(path) => Some(path),
            None => {
                Some(PathBuf::from(boxd_runtime::image::SYSTEM_CA_BUNDLE)).filter(|p| p.is_file())
            }
        };
        let images = file.images.unwrap_or_default();
        let mut debian = boxd_runtime::image::debian::DebianConfig::default();
        if let Some(m) = images.mirror {
            debian.mirror = m;
        }
        if let Some(s) = images.suite {
            debian.suite = s;
        }
        if let Some(r) = images.npm_registry {
            debian.npm_registry = r;
        }
        debian.ca_bundle = box_roots.clone();
        let storage = file.storage.unwrap_or_default();
        if storage.size_gib == Some(0) {
            bail!("[storage] size_gib must be at least 1");
        }
        for root in &extra_roots {
            if !root.is_file() {
                bail!(
                    "[tls] extra_roots: {} is not a readable file",
                    root.display()
                );
            }
        }
        Ok(Config {
            network,
            master_key_file: file
                .master_key_file
                .unwrap_or_else(|| data_dir.join("master.key")),
            extra_roots,
            box_roots,
            debian,
            data_dir,
            agent,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070))),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            cgroup_parent,
            max_json_body_bytes: file.max_json_body_bytes.unwrap_or(16 << 20),
            max_upload_bytes: file.max_upload_bytes.unwrap_or(1 << 30),
            max_api_connections: match file.max_api_connections {
                Some(0) => bail!("max_api_connections must be at least 1"),
                Some(n) => n,
                None => DEFAULT_MAX_API_CONNECTIONS,
            },
            header_read_timeout_secs: match file.header_read_timeout_secs {
                Some(0) => bail!("header_read_timeout_secs must be at least 1"),
                Some(n) => n,
                None => 100,
            },
            idle_pause_secs: file.idle_pause_secs.unwrap_or(600),
            storage: boxd_runtime::storage::StorageConfig {
                driver: storage.driver,
                size_bytes: storage.size_gib.map(|g| g.saturating_mul(1 << 30)),
            },
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse the config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("boxd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("boxd.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nmax_upload_bytes = 10\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let c = Config::load(&args, "/d".into(), "/a".into()).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_upload_bytes, 10);
        assert_eq!(c.cgroup_parent, "boxd");
        args.listen = Some("127.0.0.1:9001".parse().unwrap());
        let c = Config::load(&args, "/d".into(), "/a".into()).unwrap();
        assert_eq!(c.listen.port(), 9001);
        std::fs::write(
            &path,
            "[network]\nupstream_dns = [\"192.0.2.53\"]\nallow_ranges = [\"127.0.0.0/8\"]\n\
             [network.upstreams]\n\"api.example.test\" = \"127.0.0.1:9443\"\n",
        )
        .unwrap();
        let c = Config::load(&args, "/d".into(), "/a".into()).unwrap();
        let net = c.network.expect("networking is on by default");
        assert_eq!(net.upstream.dns, ["192.0.2.53:53".parse().unwrap()]);
        assert_eq!(net.operator.allow_ranges.len(), 1);
        std::fs::write(&path, "[network]\nallow_ranges = [\"0177.0.0.1/32\"]\n").unwrap();
        let err = Config::load(&args, "/d".into(), "/a".into()).unwrap_err();
        assert!(format!("{err:#}").contains("allow_ranges"), "{err:#}");
        std::fs::write(&path, "[network]\nenabled = false\n").unwrap();
        let c = Config::load(&args, "/d".into(), "/a".into()).unwrap();
        assert!(c.network.is_none());
        assert_eq!(c.master_key_file, PathBuf::from("/d/master.key"));
        std::fs::write(&path, "[tls]\nextra_roots = [\"/nonexistent/ca.pem\"]\n").unwrap();
        let err = Config::load(&args, "/d".into(), "/a".into()).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
        std::fs::write(&path, format!("[tls]\nextra_roots = [{:?}]\n", path)).unwrap();
        let c = Config::load(&args, "/d".into(), "/a".into()).unwrap();
        assert_eq!(c.extra_roots, std::slice::from_ref(&path));
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = Config::load(&args, "/d".into(), "/a".into()).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
        use boxd_runtime::storage::Driver;
        let c = Config::load(&args, "/d".into(), "/a".into());
        assert!(c.is_err(), "the bad key is still in the file");
        std::fs::write(&path, "[storage]\ndriver = \"dir\"\nsize_gib = 3\n").unwrap();
        let c = Config::load(&args, "/d".into(), "/a".into()).unwrap();
        assert_eq!(c.storage.driver, Driver::Dir);
        assert_eq!(c.storage.size_bytes, Some(3 << 30));
        for (bad, named) in [
            ("driver = \"zfs\"", "zfs"),
            ("size_gib = 0", "size_gib"),
            ("size = 3", "size"),
        ] {
            std::fs::write(&path, format!("[storage]\n{bad}\n")).unwrap();
            let err = Config::load(&args, "/d".into(), "/a".into()).unwrap_err();
            assert!(format!("{err:#}").contains(named), "{bad}: {err:#}");
        }
        std::fs::write(&path, "").unwrap();
        let c = Config::load(&args, "/d".into(), "/a".into()).unwrap();
        assert_eq!(c.storage.driver, Driver::Auto);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
