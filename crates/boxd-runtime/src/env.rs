//! Environment rules for boxes: which variables a user may set, and the
//! defaults boxd provides.
//!
//! PATH, HOME, LD_PRELOAD, LD_LIBRARY_PATH and NODE_OPTIONS are owned by
//! boxd: letting a caller set them would allow binary or library hijacking of
//! the tools boxd itself runs in the box. This module only validates; it
//! never reads the host's environment into a box.

use crate::error::{Result, RuntimeError};
use std::collections::BTreeMap;

/// Variables a user can never set, at create or per process.
pub const BLOCKED_ENV: [&str; 5] = [
    "PATH",
    "HOME",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "NODE_OPTIONS",
];

/// Checks every name and value; the first problem is the error.
pub fn validate(env: &BTreeMap<String, String>) -> Result<()> {
    for (name, value) in env {
        if BLOCKED_ENV.contains(&name.as_str()) {
            return Err(RuntimeError::BlockedEnv(name.clone()));
        }
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !valid_name {
            return Err(RuntimeError::InvalidEnvName(name.clone()));
        }
        if value.contains('\0') {
            return Err(RuntimeError::InvalidEnvValue(name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str, v: &str) -> BTreeMap<String, String> {
        [(k.to_string(), v.to_string())].into()
    }

    #[test]
    fn blocked_variables_are_named_in_the_error() {
        for name in BLOCKED_ENV {
            let err = validate(&env(name, "x")).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        assert!(validate(&env("", "x")).is_err());
        assert!(validate(&env("A=B", "x")).is_err());
        assert!(validate(&env("1ABC", "x")).is_err());
        assert!(validate(&env("OK", "a\0b")).is_err());
        assert!(validate(&env("OPENAI_API_KEY", "sk-1")).is_ok());
        assert!(validate(&env("path", "lowercase is another variable")).is_ok());
    }
}
