//! The one rule for the names callers give boxes, snapshots and volumes.
//!
//! Owns what a valid resource name is: 1 to 63 characters of letters,
//! digits, `-`, `_` and `.`, and never `.` or `..` (a name may become a
//! path segment). Never decides uniqueness: the store does.

use crate::error::{CoreError, CoreResult};

/// Checks `name` (`what` says which kind, e.g. "box name").
pub fn check(what: &str, name: &str) -> CoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(format!(
            "{what} {name:?} must be 1 to 63 characters of letters, digits, '-', '_' and '.' \
             (and not '.' or '..')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn names_are_short_plain_and_never_dot_segments() {
        for ok in ["a", "my-box_1.2", &"x".repeat(63), "..a", "a.."] {
            assert!(check("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(64), "é"] {
            assert!(check("name", bad).is_err(), "{bad:?}");
        }
    }
}
