//! Importing an OCI image layout or a `docker save` archive: not in this
//! build yet. It answers a clear error instead of a fake image.

use crate::error::{ImageError, Result};
use crate::progress::Progress;
use crate::{Image, Store};
use std::path::Path;

/// Imports `source` as image `name`.
pub fn import(_store: &Store, _source: &Path, _name: &str, _progress: Progress) -> Result<Image> {
    Err(ImageError::Invalid(
        "importing OCI and docker archives is not available in this boxd yet".into(),
    ))
}
