//! Images as the operator manages them through the API: list, build,
//! import and remove. Images are shared by every team, so these calls are
//! the operator's (a key of the default team); each is audited.
//!
//! Owns who may call them and running the (blocking, minutes-long)
//! builders off the async threads. The images themselves are
//! `boxd-image`'s; what is in use is the runtime's. Never a wire format.

use crate::error::{CoreError, CoreResult};
use crate::service::{BoxService, Caller};
use boxd_image::progress::Event;
use boxd_image::store::TempFile;
use boxd_image::{debian, ImageInfo};
use serde_json::json;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Progress events a build or import may queue for a slow reader; more
/// are dropped (the build never waits for its watcher). `Log` lines are
/// the bulk; steps and counts are few.
const PROGRESS_QUEUE: usize = 1024;

/// What a finished build or import made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltImage {
    pub name: String,
    pub digest: String,
    pub bytes: u64,
}

/// A build or import under way: its progress, then its result.
pub struct ImageJob {
    pub progress: mpsc::Receiver<Event>,
    pub done: tokio::task::JoinHandle<CoreResult<BuiltImage>>,
}

/// What to make: a Debian runtime image, or an import of an archive.
#[derive(Debug, Clone)]
pub enum ImageSource {
    Build { runtime: String, no_cache: bool },
    Import { file: PathBuf, name: String },
}

impl BoxService {
    fn require_operator(&self, caller: &Caller, what: &str) -> CoreResult<()> {
        let team = self.store.team(&caller.team_id)?;
        if team.is_none_or(|t| t.name != boxd_store::DEFAULT_TEAM) {
            return Err(CoreError::Forbidden(format!(
                "images are shared by every team: {what} needs a key of the operator's (default) team"
            )));
        }
        Ok(())
    }

    /// Every tagged image.
    pub fn list_images(&self, caller: &Caller) -> CoreResult<Vec<ImageInfo>> {
        self.require_operator(caller, "listing images")?;
        Ok(self.runtime.images().list()?)
    }

    /// Removes an image (refused while a box or snapshot uses it); the
    /// bytes freed.
    pub async fn remove_image(&self, caller: &Caller, name: &str) -> CoreResult<u64> {
        self.require_operator(caller, "removing an image")?;
        let rt = self.runtime.clone();
        let owned = name.to_string();
        let collected = tokio::task::spawn_blocking(move || rt.remove_image(&owned))
            .await
            .map_err(|e| CoreError::internal(format!("the image removal task failed: {e}")))??;
        self.audit(
            &caller.team_id,
            Some(caller),
            None,
            "image.remove",
            json!({"name": name, "freed_bytes": collected.bytes, "layers": collected.layers}),
        );
        Ok(collected.bytes)
    }

    /// A scratch file to receive an archive to import as `name` (removed
    /// when dropped): refused for anyone but the operator, and for a bad
    /// name, before any byte is taken.
    pub fn image_upload(&self, caller: &Caller, name: &str) -> CoreResult<TempFile> {
        self.require_operator(caller, "importing an image")?;
        boxd_image::store::check_name(name)?;
        Ok(self.runtime.images().temp_file("import")?)
    }

    /// Starts a build or an import on a blocking thread. It runs to its
    /// end even if the caller stops watching (a half image is never
    /// listed either way).
    pub fn make_image(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        source: ImageSource,
    ) -> CoreResult<ImageJob> {
        let what = match &source {
            ImageSource::Build { .. } => "building an image",
            ImageSource::Import { .. } => "importing an image",
        };
        self.require_operator(caller, what)?;
        match &source {
            ImageSource::Build { runtime, .. } => {
                let name = boxd_image::runtimes::image_for(runtime).unwrap_or(runtime);
                if !debian::buildable().contains(&name) {
                    return Err(CoreError::invalid(format!(
                        "boxd builds no image called {runtime:?}: it builds {}",
                        debian::buildable().join(", ")
                    )));
                }
            }
            ImageSource::Import { name, .. } => boxd_image::store::check_name(name)?,
        }
        let (tx, rx) = mpsc::channel(PROGRESS_QUEUE);
        let svc = self.clone();
        let caller = caller.clone();
        let done = tokio::task::spawn_blocking(move || {
            let store = svc.runtime.images();
            let mut progress = |e: Event| {
                let _ = tx.try_send(e);
            };
            let started = std::time::Instant::now();
            let (kind, made) = match &source {
                ImageSource::Build { runtime, no_cache } => {
                    let name = boxd_image::runtimes::image_for(runtime).unwrap_or(runtime);
                    let opts = debian::BuildOptions {
                        no_cache: *no_cache,
                    };
                    let made = debian::build(store, &svc.config.debian, name, opts, &mut progress);
                    ("image.build", made)
                }
                ImageSource::Import { file, name } => (
                    "image.import",
                    boxd_image::oci::import(store, file, name, &mut progress),
                ),
            };
            let result = made.map_err(CoreError::from).and_then(|image| {
                let bytes = store
                    .list()?
                    .into_iter()
                    .find(|i| i.digest == image.digest)
                    .map_or(0, |i| i.bytes);
                Ok(BuiltImage {
                    name: image.name,
                    digest: image.digest,
                    bytes,
                })
            });
            let seconds = started.elapsed().as_secs_f64();
            let data = match &result {
                Ok(b) => {
                    json!({"name": b.name, "digest": b.digest, "bytes": b.bytes, "seconds": seconds})
                }
                Err(e) => json!({"error": e.to_string(), "seconds": seconds}),
            };
            svc.audit(&caller.team_id, Some(&caller), None, kind, data);
            result
        });
        Ok(ImageJob { progress: rx, done })
    }
}
