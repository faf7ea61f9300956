//! Runtime names (`node`, `python`, `golang`, `ruby`, `rust` and their
//! `-alpine` forms, as the Upstash SDKs list them) and the images they
//! select. A known runtime whose image is not built is an error naming
//! the command that builds it — never a fallback to the host.
//!
//! No Alpine packages are reachable from the machines boxd is built on, so
//! `<runtime>-alpine` selects the Debian-based image of that runtime; the
//! box still reports the runtime it was asked for.

use crate::error::{ImageError, Result};
use crate::host::HOST_IMAGE;
use crate::store::Store;

/// The runtimes boxd builds images for.
pub const RUNTIMES: [&str; 5] = ["node", "python", "golang", "ruby", "rust"];

/// The image name a runtime name selects, when it is one of [`RUNTIMES`]
/// or its `-alpine` form.
pub fn image_for(runtime: &str) -> Option<&'static str> {
    let base = runtime.strip_suffix("-alpine").unwrap_or(runtime);
    RUNTIMES.iter().copied().find(|r| *r == base)
}

/// The runtime names a box can be created with here, sorted: `host`,
/// every image in the store, and the `-alpine` form of each built runtime.
pub fn available(store: &Store) -> Result<Vec<String>> {
    let mut names = store.tags()?;
    if !names.iter().any(|n| n == HOST_IMAGE) {
        names.push(HOST_IMAGE.to_string());
    }
    for r in RUNTIMES {
        if names.iter().any(|n| n == r) {
            names.push(format!("{r}-alpine"));
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The manifest digest of the image that `runtime` selects: a runtime name,
/// an image name, or a manifest digest.
pub fn resolve(store: &Store, runtime: &str) -> Result<String> {
    let image = image_for(runtime).unwrap_or(runtime);
    match store.resolve(image) {
        Ok(d) => Ok(d),
        Err(ImageError::UnknownImage(_)) => {
            let available = available(store)?.join(", ");
            Err(match image_for(runtime) {
                Some(image) => ImageError::NotBuilt {
                    runtime: runtime.to_string(),
                    image: image.to_string(),
                    available,
                },
                None => ImageError::UnknownRuntime {
                    name: runtime.to_string(),
                    available,
                },
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_without_its_image_names_the_build_command() {
        let d = std::env::temp_dir().join(format!("boxd-runtimes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let store = Store::open(&d).unwrap();
        let err = resolve(&store, "golang-alpine").unwrap_err().to_string();
        assert!(err.contains("boxd image build golang"), "{err}");
        assert!(err.contains("\"golang-alpine\""), "{err}");
        let err = resolve(&store, "cobol").unwrap_err().to_string();
        assert!(err.contains("cobol") && err.contains("host"), "{err}");
        assert_eq!(image_for("rust-alpine"), Some("rust"));
        assert_eq!(image_for("alpine"), None);
        std::fs::remove_dir_all(d).unwrap();
    }
}
