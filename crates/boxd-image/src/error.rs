//! The image crate's error type: what went wrong building, importing,
//! storing or loading an image, phrased so an operator can act on it.
//! Never carries a secret (a mirror URL's credentials are not kept).

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A runtime or image name this server does not know.
    #[error("unknown runtime {name:?}: available runtimes are {available}")]
    UnknownRuntime { name: String, available: String },
    /// A runtime boxd knows how to build, whose image is not built here.
    #[error(
        "runtime {runtime:?} needs the {image:?} image, which is not built on this server: \
         an operator runs `boxd image build {image}` (available now: {available})"
    )]
    NotBuilt {
        runtime: String,
        image: String,
        available: String,
    },
    #[error("unknown image {0:?}")]
    UnknownImage(String),
    #[error("invalid image name {0:?}: use 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")]
    InvalidName(String),
    /// A stored layer or manifest whose content does not match its digest,
    /// or that is missing or unreadable.
    #[error("image store: {0}")]
    Corrupt(String),
    /// The image is still used: by boxes or snapshots (named).
    #[error("image {name:?} is in use by {users}: delete them first")]
    InUse { name: String, users: String },
    /// Input to a build or import that cannot be used (a bad archive, a
    /// tampered layer, a path escaping the layer).
    #[error("{0}")]
    Invalid(String),
    /// A build step failed (a package manager, a download).
    #[error("image build failed: {0}")]
    Build(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    pub(crate) fn io_at(
        what: &str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        ImageError::io(format!("{what} {}", path.display()))
    }

    /// The path of a corrupt entry, for the message.
    pub(crate) fn corrupt(path: &std::path::Path, why: impl std::fmt::Display) -> ImageError {
        ImageError::Corrupt(format!("{}: {why}", path.display()))
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
