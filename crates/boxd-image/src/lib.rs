//! Images: what a box's root is made of. An image is an ordered stack of
//! read-only layers, each an overlayfs lower directory named by the digest
//! of its content, kept in the [`store`] of the data directory.
//!
//! Builders: [`host`] (the host's `/usr` over a generated base, the
//! zero-setup default), [`debian`] (a Debian root per runtime, from
//! packages) and the importer [`oci`] (an OCI image layout or a
//! `docker save` archive, each of its layers a stored layer).
//! This crate makes and stores images; it never runs a box (that is
//! `boxd-runtime`, which mounts the [`Image`] it is given) and never
//! decides who may use one.

pub mod boxfiles;
pub mod debian;
pub mod digest;
pub mod durable;
pub mod error;
pub mod host;
pub mod oci;
pub mod progress;
pub mod runtimes;
pub mod store;

#[cfg(test)]
#[path = "../../../tests/common/skip.rs"]
mod test_skip;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use error::{ImageError, Result};
pub use host::{ensure_host_image, HOST_IMAGE};
pub use store::{ImageInfo, LayerInfo, LayerRef, Manifest, Store};

/// The host's CA bundle (Debian's path): what image builds and boxes
/// trust by default, so the extra CAs an operator's TLS-intercepting proxy
/// needs (installed on the host) are trusted too.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The non-root user of every box: `box` (home `/workspace/home`, the
/// default working directory) and `boxuser`, the user of the Upstash
/// images (home `/home/boxuser`, where their harnesses live). One uid and
/// gid for both names, so a file either writes is the other's too and both
/// homes are writable under either name; the uid's own name is `box`.
pub const BOX_UID: u32 = 1000;

/// One read-only layer of an image, as a box mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Absolute path of the layer directory on the host.
    pub path: PathBuf,
    /// Where in the box it appears (`/` for a full root layer).
    pub target: String,
}

/// An image as a box mounts it: its layers, top-most first for each
/// target, and the environment its processes start with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    /// The manifest's digest (`sha256:…`): what a box record keeps, so a
    /// rebuilt image never changes the files under a box or snapshot.
    pub digest: String,
    pub layers: Vec<Layer>,
    /// `KEY=value` defaults (e.g. `PATH`), below the box's own env.
    #[serde(default)]
    pub env: Vec<String>,
}

impl Image {
    /// Distinct targets, `/` first, then in path order (parents before children).
    pub fn targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self.layers.iter().map(|l| l.target.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Lower directories for `target`, top-most first.
    pub fn lowers(&self, target: &str) -> Vec<PathBuf> {
        self.layers
            .iter()
            .filter(|l| l.target == target)
            .map(|l| l.path.clone())
            .collect()
    }
}
