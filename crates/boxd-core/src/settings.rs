//! Team-wide settings: the environment every new box of the team gets
//! (under the box's own env), and the team's attach headers (merged under
//! a box's own at create; a box's rules are fixed for its life, so a
//! change affects only boxes created afterwards).
//!
//! Owns validating env names (the runtime's rules: blocked names such as
//! PATH or LD_PRELOAD are refused here, not at box create) and header
//! rules. Never returns, logs or audits a value once set: answers carry
//! names (and patterns) only. Never a wire format.

use crate::error::{CoreError, CoreResult};
use crate::secrets::parse_attach_headers;
use crate::service::{BoxService, Caller};
use serde_json::{json, Value};
use std::collections::BTreeMap;

impl BoxService {
    fn save_team_env(&self, caller: &Caller, env: &BTreeMap<String, String>) -> CoreResult<()> {
        boxd_runtime::env::validate(env)?;
        self.store.set_team_env(&caller.team_id, env)?;
        let names: Vec<&String> = env.keys().collect();
        self.audit(
            &caller.team_id,
            Some(caller),
            None,
            "settings.env",
            json!({"names": names}),
        );
        Ok(())
    }

    /// The names of the team's environment variables.
    pub fn team_env_names(&self, caller: &Caller) -> CoreResult<Vec<String>> {
        Ok(self.store.team_env(&caller.team_id)?.into_keys().collect())
    }

    /// Replaces the team's environment; answers its names.
    pub fn replace_team_env(
        &self,
        caller: &Caller,
        env: &BTreeMap<String, String>,
    ) -> CoreResult<Vec<String>> {
        self.save_team_env(caller, env)?;
        Ok(env.keys().cloned().collect())
    }

    /// Sets one team variable; answers the names.
    pub fn set_team_env(
        &self,
        caller: &Caller,
        key: &str,
        value: String,
    ) -> CoreResult<Vec<String>> {
        let mut env = self.store.team_env(&caller.team_id)?;
        env.insert(key.to_string(), value);
        self.save_team_env(caller, &env)?;
        Ok(env.into_keys().collect())
    }

    /// Removes one team variable; answers the names left.
    pub fn delete_team_env(&self, caller: &Caller, key: &str) -> CoreResult<Vec<String>> {
        let mut env = self.store.team_env(&caller.team_id)?;
        if env.remove(key).is_none() {
            return Err(CoreError::not_found(format!(
                "no team environment variable {key}"
            )));
        }
        self.save_team_env(caller, &env)?;
        Ok(env.into_keys().collect())
    }

    /// The team's attach headers: host pattern → header names.
    pub fn team_attach_headers(
        &self,
        caller: &Caller,
    ) -> CoreResult<BTreeMap<String, Vec<String>>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (pattern, name) in self.store.list_team_attach_headers(&caller.team_id)? {
            out.entry(pattern).or_default().push(name);
        }
        Ok(out)
    }

    /// Sets the team's headers for one host pattern (`headers`: an object
    /// of header name → value), replacing what the pattern had.
    pub fn set_team_attach_headers(
        &self,
        caller: &Caller,
        pattern: &str,
        headers: &Value,
    ) -> CoreResult<BTreeMap<String, Vec<String>>> {
        let body = json!({ pattern: headers });
        let rules = parse_attach_headers(Some(&body))?;
        let Some(rule) = rules.first() else {
            return Err(CoreError::invalid(format!(
                "no headers given for {pattern:?}: send {{\"Header-Name\": \"value\"}}"
            )));
        };
        let pairs: Vec<(&str, &[u8])> = rule
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_bytes()))
            .collect();
        self.store.replace_team_attach_headers(
            self.secrets.keys(),
            &caller.team_id,
            pattern,
            &pairs,
        )?;
        let names: Vec<&str> = rule.headers.iter().map(|h| h.name.as_str()).collect();
        self.audit(
            &caller.team_id,
            Some(caller),
            None,
            "settings.attach_headers.set",
            json!({"pattern": pattern, "headers": names}),
        );
        self.team_attach_headers(caller)
    }

    /// Removes the team's headers for one host pattern.
    pub fn delete_team_attach_headers(
        &self,
        caller: &Caller,
        pattern: &str,
    ) -> CoreResult<BTreeMap<String, Vec<String>>> {
        if self
            .store
            .delete_team_attach_header(&caller.team_id, pattern)?
            == 0
        {
            return Err(CoreError::not_found(format!(
                "no team attach headers for {pattern:?}"
            )));
        }
        self.audit(
            &caller.team_id,
            Some(caller),
            None,
            "settings.attach_headers.delete",
            json!({"pattern": pattern}),
        );
        self.team_attach_headers(caller)
    }
}
