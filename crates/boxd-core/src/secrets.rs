//! Secrets on the daemon's side: the master keys (a file outside the
//! database), boxd's CA (generated at first start, its key sealed in the
//! store), the trust bundle and CA variables every box gets, and turning a
//! create request's `attach_headers` and `secrets` into sealed rows,
//! placeholders in the box's environment and the proxy's [`SecretRules`].
//!
//! Owns: where values are opened (only here, only to hand them to the
//! proxy) and the messages about them. Never: logs, returns, or puts into
//! an error message or an audit event a value — messages name patterns,
//! headers and secrets only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use boxd_net::secrets::{AttachHeaderRule, PlaceholderSecret, SecretRuleError, SecretRules};
use boxd_net::tls::{
    bundle_with, upstream_client_config, BoxdCa, LeafCache, BUNDLE_PATHS, CA_ENV_VARS,
    DEFAULT_LEAF_LIFETIME,
};
use boxd_net::Interception;
use boxd_runtime::TrustBundle;
use boxd_store::crypto::MasterKeys;
use boxd_store::{new_placeholder, Store, StoreError, StoredAttachHeader};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::error::{CoreError, CoreResult};

/// The trust bundle boxes mount, under the data dir.
pub const BUNDLE_FILE: &str = "tls/ca-bundle.pem";
/// boxd's CA certificate alone (public), for operators and tests.
pub const CA_CERT_FILE: &str = "tls/ca.pem";

/// The daemon's secret material.
pub struct Secrets {
    keys: MasterKeys,
    /// boxd's CA and the bundle built with it: only with networking on.
    ca: Option<(Arc<BoxdCa>, TrustBundle)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Loads (or creates) the master keys and — with networking on — the
    /// CA, and writes the trust bundle boxes mount: `roots` (the operator's
    /// `[tls] box_roots`, by default the host's system bundle) plus boxd's
    /// CA.
    pub fn load(
        master_key_file: &Path,
        data_dir: &Path,
        store: &Store,
        networking: bool,
        roots: Option<&Path>,
    ) -> anyhow::Result<Secrets> {
        let keys = MasterKeys::load_or_create(master_key_file)
            .with_context(|| format!("load the master key file {}", master_key_file.display()))?;
        let ca = if networking {
            let ca = Arc::new(load_or_create_ca(store, &keys)?);
            let trust = write_trust_files(data_dir, &ca, roots)?;
            Some((ca, trust))
        } else {
            None
        };
        Ok(Secrets { keys, ca })
    }

    pub fn keys(&self) -> &MasterKeys {
        &self.keys
    }

    /// What the proxy intercepts with: leaves minted from boxd's CA, and
    /// upstreams verified against the system roots plus `extra_roots`.
    /// `None` without networking.
    pub fn interception(&self, extra_roots: &[PathBuf]) -> anyhow::Result<Option<Interception>> {
        let Some((ca, _)) = &self.ca else {
            return Ok(None);
        };
        let upstream_tls = upstream_client_config(extra_roots)
            .context("the roots that verify upstreams ([tls] extra_roots and the system's)")?;
        Ok(Some(Interception {
            leaves: Arc::new(LeafCache::new(ca.clone(), DEFAULT_LEAF_LIFETIME)),
            upstream_tls,
        }))
    }

    /// What a new box trusts: the bundle mounted over its system bundles,
    /// and the CA variables (each unless the box's env sets it already).
    pub fn apply_trust(&self, spec: &mut boxd_runtime::BoxSpec) {
        let Some((_, trust)) = &self.ca else {
            return;
        };
        spec.trust = Some(trust.clone());
        for var in CA_ENV_VARS {
            spec.env
                .entry((*var).to_owned())
                .or_insert_with(|| BUNDLE_PATHS[0].to_owned());
        }
    }

    /// The team's attach-header rules, opened.
    pub fn team_rules(&self, store: &Store, team_id: &str) -> CoreResult<Vec<AttachHeaderRule>> {
        let rows = store.sealed_team_attach_headers(team_id)?;
        self.open_headers(rows)
    }

    /// A box's rules as stored at its creation (team rules merged in).
    pub fn box_rules(&self, store: &Store, box_id: &str) -> CoreResult<SecretRules> {
        let own = self.open_headers(store.box_attach_headers(box_id)?)?;
        let mut secrets = Vec::new();
        for stored in store.box_secrets(box_id)? {
            let public: StoredSecretSpec = serde_json::from_str(&stored.hosts_json)
                .map_err(|e| CoreError::internal(format!("stored secret {}: {e}", stored.name)))?;
            let value = utf8(stored.value.open(&self.keys)?, &stored.name)?;
            secrets.push(
                PlaceholderSecret::new(
                    &stored.name,
                    &public.hosts,
                    stored.placeholder,
                    value,
                    public.in_query,
                    public.in_body,
                )
                .map_err(rule_error)?,
            );
        }
        SecretRules::new(Vec::new(), own, secrets).map_err(rule_error)
    }

    /// Seals and stores a new box's agent API key and MCP header values,
    /// all or nothing.
    pub(crate) fn store_agent_secrets(
        &self,
        store: &Store,
        team_id: &str,
        box_id: &str,
        agent: &crate::agent::CheckedAgent,
    ) -> CoreResult<()> {
        if agent.api_key.is_none() && agent.mcp_headers.is_empty() {
            return Ok(());
        }
        let headers: Vec<(&str, &str, &[u8])> = agent
            .mcp_headers
            .iter()
            .map(|(server, name, value)| (server.as_str(), name.as_str(), value.as_bytes()))
            .collect();
        store.put_box_agent_secrets(
            &self.keys,
            team_id,
            box_id,
            agent.api_key.as_ref().map(|k| k.as_bytes()),
            &headers,
        )?;
        Ok(())
    }

    /// Seals and stores a new box's merged rules, all or nothing.
    pub fn store_box_rules(
        &self,
        store: &Store,
        team_id: &str,
        box_id: &str,
        rules: &SecretRules,
    ) -> CoreResult<()> {
        if rules.is_empty() {
            return Ok(());
        }
        let patterns: Vec<String> = rules
            .headers()
            .iter()
            .map(|r| r.pattern.to_string())
            .collect();
        let mut headers = Vec::new();
        for (rule, pattern) in rules.headers().iter().zip(&patterns) {
            for h in &rule.headers {
                headers.push((pattern.as_str(), h.name.as_str(), h.value.as_bytes()));
            }
        }
        let publics: Vec<String> = rules
            .secrets()
            .iter()
            .map(|s| {
                serde_json::to_string(&StoredSecretSpec::of(s))
                    .map_err(|e| CoreError::internal(format!("encode secret {}: {e}", s.name)))
            })
            .collect::<CoreResult<_>>()?;
        let secrets: Vec<_> = rules
            .secrets()
            .iter()
            .zip(&publics)
            .map(|(s, public)| {
                (
                    s.name.as_str(),
                    public.as_str(),
                    s.placeholder.as_str(),
                    s.value.as_bytes(),
                )
            })
            .collect();
        store.put_box_secret_rules(&self.keys, team_id, box_id, &headers, &secrets)?;
        Ok(())
    }

    fn open_headers(&self, rows: Vec<StoredAttachHeader>) -> CoreResult<Vec<AttachHeaderRule>> {
        let mut by_pattern: BTreeMap<String, Vec<(String, Zeroizing<String>)>> = BTreeMap::new();
        for row in rows {
            let value = utf8(row.value.open(&self.keys)?, &row.header_name)?;
            by_pattern
                .entry(row.pattern)
                .or_default()
                .push((row.header_name, value));
        }
        by_pattern
            .into_iter()
            .map(|(pattern, headers)| AttachHeaderRule::new(&pattern, headers).map_err(rule_error))
            .collect()
    }
}

/// A placeholder secret as callers see it: everything but the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SecretInfo {
    /// Host patterns the value is sent to (exact or `*.` wildcard).
    pub hosts: Vec<String>,
    /// Also substituted in request query strings.
    pub in_query: bool,
    /// Also substituted in request bodies.
    pub in_body: bool,
}

/// A secret's public settings, stored beside its sealed value (and bound
/// to it: they are the value's associated data).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSecretSpec {
    hosts: Vec<String>,
    #[serde(default)]
    in_query: bool,
    #[serde(default)]
    in_body: bool,
}

impl StoredSecretSpec {
    fn of(s: &PlaceholderSecret) -> Self {
        StoredSecretSpec {
            hosts: s.hosts.iter().map(ToString::to_string).collect(),
            in_query: s.in_query,
            in_body: s.in_body,
        }
    }
}

fn utf8(bytes: Zeroizing<Vec<u8>>, name: &str) -> CoreResult<Zeroizing<String>> {
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(Zeroizing::new(s.to_owned())),
        Err(_) => Err(CoreError::internal(format!(
            "stored value of {name} is not UTF-8"
        ))),
    }
}

fn rule_error(e: SecretRuleError) -> CoreError {
    CoreError::invalid(e.to_string())
}

/// The CA from the store, or a new one stored now (a concurrent first
/// start that stored one first wins; its CA is used).
fn load_or_create_ca(store: &Store, keys: &MasterKeys) -> anyhow::Result<BoxdCa> {
    let open = |stored: boxd_store::StoredCa| -> anyhow::Result<BoxdCa> {
        let key = stored.key.open(keys).context(
            "open boxd's CA key (is this the master key file the data dir was created with?)",
        )?;
        BoxdCa::from_parts(&stored.cert_pem, &key).context("load boxd's CA")
    };
    if let Some(stored) = store.ca().context("read boxd's CA")? {
        return open(stored);
    }
    let ca = BoxdCa::generate("boxd egress proxy CA").context("generate boxd's CA")?;
    let (cert_pem, key_der) = ca.to_parts();
    match store.put_ca(keys, &cert_pem, &key_der) {
        Ok(()) => {
            tracing::info!("generated boxd's CA (its key is sealed in the database)");
            Ok(ca)
        }
        Err(StoreError::Conflict(_)) => open(store.ca()?.context("boxd's CA vanished")?),
        Err(e) => Err(e).context("store boxd's CA"),
    }
}

/// Writes `tls/ca.pem` and `tls/ca-bundle.pem` (`roots` + boxd's CA),
/// atomically, readable by boxes' mapped users.
fn write_trust_files(
    data_dir: &Path,
    ca: &BoxdCa,
    roots: Option<&Path>,
) -> anyhow::Result<TrustBundle> {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dir.display()))?;
    let system = match roots {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("read the CA bundle {}", path.display()))?
        }
        None => {
            tracing::warn!("no CA bundle for boxes ([tls] box_roots): boxes trust boxd's CA only");
            Vec::new()
        }
    };
    let file = data_dir.join(BUNDLE_FILE);
    write_public(&data_dir.join(CA_CERT_FILE), ca.cert_pem().as_bytes())?;
    write_public(&file, &bundle_with(&system, ca.cert_pem()))?;
    Ok(TrustBundle {
        file,
        paths: BUNDLE_PATHS.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    boxd_runtime::durable::write(path, bytes, 0o644)
        .with_context(|| format!("write {}", path.display()))
}

/// A create request's `attach_headers` (`{"pattern": {"Header":
/// "value"}}`), validated. Messages never quote a value.
pub fn parse_attach_headers(v: Option<&Value>) -> CoreResult<Vec<AttachHeaderRule>> {
    let Some(map) = object(v, "attach_headers")? else {
        return Ok(Vec::new());
    };
    map.iter()
        .map(|(pattern, headers)| {
            let Value::Object(headers) = headers else {
                return Err(CoreError::invalid(format!(
                    "attach_headers[{pattern:?}] must be an object of header name → value"
                )));
            };
            let headers = headers
                .iter()
                .map(|(name, value)| match value {
                    Value::String(s) => Ok((name.clone(), Zeroizing::new(s.clone()))),
                    _ => Err(CoreError::invalid(format!(
                        "attach_headers[{pattern:?}][{name:?}] must be a string"
                    ))),
                })
                .collect::<CoreResult<Vec<_>>>()?;
            AttachHeaderRule::new(pattern, headers).map_err(rule_error)
        })
        .collect()
}

/// A create request's `secrets` (`{"NAME": {"hosts": [...], "value":
/// "...", "in_query"?, "in_body"?}}`), validated, each with a fresh
/// placeholder. Messages never quote a value.
pub fn parse_secrets(v: Option<&Value>) -> CoreResult<Vec<PlaceholderSecret>> {
    let Some(map) = object(v, "secrets")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, spec) in map {
        let bad = |why: &str| CoreError::invalid(format!("secrets[{name:?}]: {why}"));
        let Value::Object(fields) = spec else {
            return Err(bad(
                "must be an object {\"hosts\": [...], \"value\": \"...\"}",
            ));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !["hosts", "value", "in_query", "in_body"].contains(&k.as_str()))
        {
            return Err(bad(&format!(
                "unknown field {unknown:?} (known: hosts, value, in_query, in_body)"
            )));
        }
        let hosts = match fields.get("hosts") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|h| h.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("hosts must be an array of strings"))?,
            _ => return Err(bad("hosts (an array of host patterns) is required")),
        };
        let value = match fields.get("value") {
            Some(Value::String(s)) => Zeroizing::new(s.clone()),
            _ => return Err(bad("value (a string) is required")),
        };
        let flag = |key: &str| match fields.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(&format!("{key} must be true or false"))),
        };
        let placeholder = new_placeholder()?;
        out.push(
            PlaceholderSecret::new(
                name,
                &hosts,
                placeholder,
                value,
                flag("in_query")?,
                flag("in_body")?,
            )
            .map_err(rule_error)?,
        );
    }
    Ok(out)
}

fn object<'a>(
    v: Option<&'a Value>,
    field: &str,
) -> CoreResult<Option<&'a serde_json::Map<String, Value>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(CoreError::invalid(format!("{field} must be an object"))),
    }
}

/// What `GET` shows of a box's rules: patterns, header names, secret
/// names with their hosts.
pub fn public_view(
    rules: &SecretRules,
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, SecretInfo>) {
    let headers = rules
        .headers()
        .iter()
        .map(|r| {
            (
                r.pattern.to_string(),
                r.headers.iter().map(|h| h.name.clone()).collect(),
            )
        })
        .collect();
    let secrets = rules
        .secrets()
        .iter()
        .map(|s| {
            let public = StoredSecretSpec::of(s);
            (
                s.name.clone(),
                SecretInfo {
                    hosts: public.hosts,
                    in_query: s.in_query,
                    in_body: s.in_body,
                },
            )
        })
        .collect();
    (headers, secrets)
}
