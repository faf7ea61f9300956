//! OCI image layouts made by hand for tests (real sha256 digests, gzip
//! or plain layers): shared by the importer's tests and the end-to-end
//! import test of the daemon (`tests/image_import.rs` includes it by
//! path).
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

pub fn sha(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

/// Writes `blob` into an OCI layout directory; returns its digest.
pub fn put_blob(layout: &Path, blob: &[u8]) -> String {
    let d = sha(blob);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex_of(&d)), blob).unwrap();
    d
}

/// An image manifest blob for `layers` (tars, `gzip` each or not): the
/// layer and config blobs are written; returns (manifest digest, size,
/// layer blob digests).
pub fn put_image(
    layout: &Path,
    layers: &[(Vec<u8>, bool)],
    env: &[&str],
) -> (String, usize, Vec<String>) {
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, gz) in layers {
        diff_ids.push(sha(tar));
        let blob = if *gz { gzip(tar) } else { tar.clone() };
        let d = put_blob(layout, &blob);
        descs.push(serde_json::json!({
            "mediaType": if *gz {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            },
            "digest": d,
            "size": blob.len(),
        }));
        digests.push(d);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": env, "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let config_digest = put_blob(layout, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": descs,
    }))
    .unwrap();
    let md = put_blob(layout, &manifest);
    (md, manifest.len(), digests)
}

pub fn write_index(layout: &Path, manifests: serde_json::Value) {
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap(),
    )
    .unwrap();
}

/// A one-image OCI layout at `layout`; returns the layer blob digests.
pub fn oci_layout(layout: &Path, layers: &[(Vec<u8>, bool)], env: &[&str]) -> Vec<String> {
    std::fs::create_dir_all(layout).unwrap();
    let (md, size, digests) = put_image(layout, layers, env);
    write_index(
        layout,
        serde_json::json!([{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": size,
        }]),
    );
    digests
}

/// A tar of the directory `dir` (an OCI layout tarred).
pub fn tar_of_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}
