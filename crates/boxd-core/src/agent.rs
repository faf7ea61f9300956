//! A box's coding-agent configuration: the harness, the model, a custom
//! harness's runner, the skills it enables and its MCP servers — checked
//! at create (and by the config calls that change them), stored in the
//! box's spec.
//!
//! Owns what a valid configuration is and every bound on it. The agent's
//! API key and the header values of remote MCP servers are write-only:
//! they are sealed in the store (`agent_key`, `mcp_header` rows) and never
//! enter the box's spec, env or files, a log line, an error message or an
//! answer. Agent runs themselves are not built yet.

use crate::boxes::{BoxInfo, BoxMeta};
use crate::error::{CoreError, CoreResult};
use crate::service::{BoxService, Caller};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// The harnesses a box may name as its `agent` (the Upstash SDKs' `Agent`
/// values).
pub const AGENT_HARNESSES: [&str; 5] = ["claude-code", "codex", "opencode", "cursor", "custom"];
/// The harness whose process the caller names (`custom_runner`).
pub const CUSTOM_HARNESS: &str = "custom";
/// The only stream protocol a custom runner may speak.
pub const RUNNER_PROTOCOL: &str = "box-sse-v1";
/// The model a custom harness gets when none is given.
const CUSTOM_MODEL: &str = "custom";

const MAX_MODEL: usize = 256;
const MAX_API_KEY: usize = 8192;
const MAX_COMMAND: usize = 4096;
const MAX_ARGS: usize = 256;
const MAX_ARG: usize = 4096;
/// At most this many skills per box.
pub const MAX_SKILLS: usize = 64;
const MAX_SKILL: usize = 200;
/// At most this many MCP servers per box.
pub const MAX_MCP_SERVERS: usize = 32;
const MAX_MCP_NAME: usize = 64;
const MAX_MCP_TARGET: usize = 2048;
const MAX_MCP_HEADERS: usize = 32;
const MAX_HEADER_NAME: usize = 128;
const MAX_HEADER_VALUE: usize = 8192;

/// A value the caller sent that must never be shown: its `Debug` is
/// `WriteOnly(..)`, so a logged request cannot leak it.
#[derive(Clone, Default, PartialEq)]
pub struct WriteOnly<T>(pub T);

impl<T> fmt::Debug for WriteOnly<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteOnly(..)")
    }
}

/// What a create asks of the agent (every field optional, as sent).
#[derive(Debug, Clone, Default)]
pub struct AgentRequest {
    /// The harness: one of [`AGENT_HARNESSES`].
    pub agent: Option<String>,
    pub model: Option<String>,
    /// The model provider's key, or the Upstash sentinels `UPSTASH_KEY` /
    /// `STORED_KEY` (kept as given).
    pub api_key: Option<WriteOnly<String>>,
    /// `{"command", "args"?, "protocol"?}` (harness `custom` only).
    pub custom_runner: Option<Value>,
    /// `owner/repo` (or `owner/repo/skill`) names.
    pub skills: Vec<String>,
    /// `[{"name", "source": "npm", "package_or_url", "args"?}
    /// | {"name", "source": "url", "package_or_url", "headers"?}]`
    /// (header values write-only).
    pub mcp_servers: Option<WriteOnly<Value>>,
}

impl AgentRequest {
    /// True when nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.agent.is_none()
            && self.model.is_none()
            && self.api_key.is_none()
            && self.custom_runner.is_none()
            && self.skills.is_empty()
            && self.mcp_servers.is_none()
    }
}

/// The process of a custom harness, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRunner {
    /// A program on the box's PATH, or an absolute path.
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    pub protocol: String,
}

/// Where an MCP server comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum McpSource {
    /// An npm package run in the box.
    Npm,
    /// A remote server.
    Url,
}

/// An MCP server as stored and shown: header names, never their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServer {
    pub name: String,
    pub source: McpSource,
    pub package_or_url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Names of the headers sent to a remote server (values sealed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_names: Vec<String>,
}

/// The agent configuration a box records (in its spec): no key, no
/// header value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_runner: Option<CustomRunner>,
    /// Whether an API key is sealed for the box.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub has_api_key: bool,
    /// Enabled skills, in the order they were added.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServer>,
}

impl AgentConfig {
    pub fn is_empty(&self) -> bool {
        *self == AgentConfig::default()
    }
}

/// A checked agent request: what the spec records, and the write-only
/// values to seal.
pub struct CheckedAgent {
    pub config: AgentConfig,
    pub api_key: Option<Zeroizing<String>>,
    /// `(server, header name, value)`.
    pub mcp_headers: Vec<(String, String, Zeroizing<String>)>,
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks the model name.
pub fn check_model(model: &str) -> CoreResult<()> {
    if model.is_empty() || model.len() > MAX_MODEL || has_control(model) {
        return Err(CoreError::invalid(format!(
            "model must be 1 to {MAX_MODEL} bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks a harness name.
fn check_harness(agent: &str) -> CoreResult<()> {
    if AGENT_HARNESSES.contains(&agent) {
        return Ok(());
    }
    let shown: String = agent.chars().take(64).collect();
    Err(CoreError::invalid(format!(
        "agent {shown:?} is not a harness this boxd has; use one of: {}",
        AGENT_HARNESSES.join(", ")
    )))
}

fn check_args(what: &str, args: &[String]) -> CoreResult<()> {
    if args.len() > MAX_ARGS {
        return Err(CoreError::invalid(format!(
            "{what}: at most {MAX_ARGS} arguments, got {}",
            args.len()
        )));
    }
    for (i, a) in args.iter().enumerate() {
        if a.len() > MAX_ARG || a.contains('\0') {
            return Err(CoreError::invalid(format!(
                "{what}[{i}]: an argument is at most {MAX_ARG} bytes without NUL"
            )));
        }
    }
    Ok(())
}

/// Parses and checks a custom runner (`{"command", "args"?, "protocol"?}`,
/// `null` for an absent optional).
pub fn check_custom_runner(v: &Value) -> CoreResult<CustomRunner> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RunnerIn {
        command: String,
        #[serde(default)]
        args: Option<Vec<String>>,
        #[serde(default)]
        protocol: Option<String>,
    }
    let r: RunnerIn = serde_json::from_value(v.clone()).map_err(|e| {
        CoreError::invalid(format!(
            "custom_runner: expected {{\"command\": string, \"args\"?: [string], \"protocol\"?: \"{RUNNER_PROTOCOL}\"}}: {e}"
        ))
    })?;
    let cmd = &r.command;
    if cmd.is_empty() || cmd.len() > MAX_COMMAND || has_control(cmd) {
        return Err(CoreError::invalid(format!(
            "custom_runner.command must be 1 to {MAX_COMMAND} bytes without control characters"
        )));
    }
    if cmd.contains('/') && !cmd.starts_with('/') {
        return Err(CoreError::invalid(
            "custom_runner.command is a program name on the box's PATH or an absolute path",
        ));
    }
    let args = r.args.unwrap_or_default();
    check_args("custom_runner.args", &args)?;
    let protocol = r.protocol.unwrap_or_else(|| RUNNER_PROTOCOL.into());
    if protocol != RUNNER_PROTOCOL {
        return Err(CoreError::invalid(format!(
            "custom_runner.protocol must be \"{RUNNER_PROTOCOL}\""
        )));
    }
    Ok(CustomRunner {
        command: r.command,
        args,
        protocol,
    })
}

/// Checks a skill name: `owner/repo` or `owner/repo/skill`, each part of
/// letters, digits, `-`, `_` and `.` (never `.` or `..`).
pub fn check_skill(skill: &str) -> CoreResult<()> {
    let parts: Vec<&str> = skill.split('/').collect();
    let part_ok = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if skill.len() > MAX_SKILL || !(2..=3).contains(&parts.len()) || !parts.iter().all(part_ok) {
        let shown: String = skill.chars().take(64).collect();
        return Err(CoreError::invalid(format!(
            "skill {shown:?} must be owner/repo or owner/repo/skill (at most {MAX_SKILL} bytes of letters, digits, '-', '_', '.' and '/')"
        )));
    }
    Ok(())
}

/// Checks a list of skills; duplicates count once, the first order kept.
pub fn check_skills(skills: &[String]) -> CoreResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for s in skills {
        check_skill(s)?;
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    if out.len() > MAX_SKILLS {
        return Err(CoreError::invalid(format!(
            "a box enables at most {MAX_SKILLS} skills, got {}",
            out.len()
        )));
    }
    Ok(out)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses and checks the MCP servers: their public part, and the header
/// values to seal (`(server, header, value)`).
#[allow(clippy::type_complexity)]
fn check_mcp_servers(
    v: &Value,
) -> CoreResult<(Vec<McpServer>, Vec<(String, String, Zeroizing<String>)>)> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ServerIn {
        name: String,
        source: McpSource,
        package_or_url: String,
        #[serde(default)]
        args: Option<Vec<String>>,
        #[serde(default)]
        headers: Option<BTreeMap<String, String>>,
    }
    let list = v.as_array().ok_or_else(|| {
        CoreError::invalid(
            "mcp_servers: expected a list of {\"name\", \"source\", \"package_or_url\", ...}",
        )
    })?;
    if list.len() > MAX_MCP_SERVERS {
        return Err(CoreError::invalid(format!(
            "a box has at most {MAX_MCP_SERVERS} MCP servers, got {}",
            list.len()
        )));
    }
    let mut servers: Vec<McpServer> = Vec::new();
    let mut sealed = Vec::new();
    for (i, item) in list.iter().enumerate() {
        // Errors name the field, never a header value.
        let s: ServerIn = serde_json::from_value(item.clone()).map_err(|e| {
            CoreError::invalid(format!(
                "mcp_servers[{i}]: expected {{\"name\", \"source\": \"npm\" | \"url\", \"package_or_url\", \"args\"? (npm), \"headers\"? (url)}}: {}",
                redact_serde(&e)
            ))
        })?;
        let name_ok = !s.name.is_empty()
            && s.name.len() <= MAX_MCP_NAME
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err(CoreError::invalid(format!(
                "mcp_servers[{i}].name must be 1 to {MAX_MCP_NAME} characters of letters, digits, '-', '_' and '.'"
            )));
        }
        if servers.iter().any(|o| o.name == s.name) {
            return Err(CoreError::invalid(format!(
                "mcp_servers: two servers are named {:?}",
                s.name
            )));
        }
        let target = &s.package_or_url;
        if target.is_empty()
            || target.len() > MAX_MCP_TARGET
            || has_control(target)
            || target.contains(' ')
        {
            return Err(CoreError::invalid(format!(
                "mcp_servers[{i}].package_or_url must be 1 to {MAX_MCP_TARGET} bytes without spaces or control characters"
            )));
        }
        let args = s.args.unwrap_or_default();
        let headers = s.headers.unwrap_or_default();
        match s.source {
            McpSource::Npm => {
                if !headers.is_empty() {
                    return Err(CoreError::invalid(format!(
                        "mcp_servers[{i}]: headers are for \"url\" servers; an \"npm\" server takes args"
                    )));
                }
                check_args(&format!("mcp_servers[{i}].args"), &args)?;
            }
            McpSource::Url => {
                if !args.is_empty() {
                    return Err(CoreError::invalid(format!(
                        "mcp_servers[{i}]: args are for \"npm\" servers; a \"url\" server takes headers"
                    )));
                }
                if !(target.starts_with("https://") || target.starts_with("http://")) {
                    return Err(CoreError::invalid(format!(
                        "mcp_servers[{i}].package_or_url: a \"url\" server's address starts with https:// or http://"
                    )));
                }
                if headers.len() > MAX_MCP_HEADERS {
                    return Err(CoreError::invalid(format!(
                        "mcp_servers[{i}]: at most {MAX_MCP_HEADERS} headers"
                    )));
                }
            }
        }
        let mut header_names = Vec::new();
        for (h, value) in headers {
            if h.len() > MAX_HEADER_NAME || !is_token(&h) {
                let shown: String = h.chars().take(64).collect();
                return Err(CoreError::invalid(format!(
                    "mcp_servers[{i}].headers: {shown:?} is not a header name"
                )));
            }
            if value.len() > MAX_HEADER_VALUE || value.contains(['\r', '\n', '\0']) {
                return Err(CoreError::invalid(format!(
                    "mcp_servers[{i}].headers.{h}: a value is at most {MAX_HEADER_VALUE} bytes without CR, LF or NUL"
                )));
            }
            header_names.push(h.clone());
            sealed.push((s.name.clone(), h, Zeroizing::new(value)));
        }
        servers.push(McpServer {
            name: s.name,
            source: s.source,
            package_or_url: s.package_or_url,
            args,
            header_names,
        });
    }
    Ok((servers, sealed))
}

/// A serde error's message without the value it may quote.
fn redact_serde(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.find("invalid type:") {
        // "invalid type: string \"...\", expected ..." → keep the expectation.
        Some(_) => match msg.rfind(", expected") {
            Some(at) => format!("invalid type{}", &msg[at..]),
            None => "invalid type".into(),
        },
        None => msg,
    }
}

/// Checks a create's agent request.
pub fn check_agent(req: AgentRequest) -> CoreResult<CheckedAgent> {
    let AgentRequest {
        agent,
        model,
        api_key,
        custom_runner,
        skills,
        mcp_servers,
    } = req;
    let skills = check_skills(&skills)?;
    let (mcp_servers, mcp_headers) = match mcp_servers {
        None => (Vec::new(), Vec::new()),
        Some(WriteOnly(v)) => check_mcp_servers(&v)?,
    };
    let Some(agent) = agent else {
        for (given, field) in [
            (model.is_some(), "model"),
            (api_key.is_some(), "agent_api_key"),
            (custom_runner.is_some(), "custom_runner"),
        ] {
            if given {
                return Err(CoreError::invalid(format!(
                    "{field} needs agent (the harness: one of {})",
                    AGENT_HARNESSES.join(", ")
                )));
            }
        }
        return Ok(CheckedAgent {
            config: AgentConfig {
                skills,
                mcp_servers,
                ..AgentConfig::default()
            },
            api_key: None,
            mcp_headers,
        });
    };
    check_harness(&agent)?;
    let custom = agent == CUSTOM_HARNESS;
    let model = match model {
        Some(m) => m,
        None if custom => CUSTOM_MODEL.into(),
        None => return Err(CoreError::invalid(format!("agent {agent:?} needs a model"))),
    };
    check_model(&model)?;
    let custom_runner = match (custom, custom_runner) {
        (true, Some(v)) => Some(check_custom_runner(&v)?),
        (true, None) => {
            return Err(CoreError::invalid(format!(
                "agent \"custom\" needs custom_runner {{\"command\", \"args\"?, \"protocol\"?: \"{RUNNER_PROTOCOL}\"}}"
            )))
        }
        (false, Some(_)) => {
            return Err(CoreError::invalid(
                "custom_runner is for agent \"custom\" only",
            ))
        }
        (false, None) => None,
    };
    let api_key = match api_key {
        None => None,
        Some(_) if custom => {
            return Err(CoreError::invalid(
                "agent \"custom\" takes no agent_api_key; pass what the harness needs through env_vars or secrets",
            ))
        }
        Some(WriteOnly(key)) => {
            let key = Zeroizing::new(key);
            if key.is_empty() || key.len() > MAX_API_KEY || has_control(&key) {
                return Err(CoreError::invalid(format!(
                    "agent_api_key must be 1 to {MAX_API_KEY} bytes without control characters"
                )));
            }
            Some(key)
        }
    };
    Ok(CheckedAgent {
        config: AgentConfig {
            agent: Some(agent),
            model: Some(model),
            custom_runner,
            has_api_key: api_key.is_some(),
            skills,
            mcp_servers,
        },
        api_key,
        mcp_headers,
    })
}

impl BoxService {
    /// Writes the box's changed agent configuration and audits `kind`.
    fn change_agent(
        &self,
        caller: &Caller,
        id: &str,
        kind: &str,
        data: Value,
        change: impl FnOnce(&mut AgentConfig) -> CoreResult<()>,
    ) -> CoreResult<BoxInfo> {
        let mut row = self.find(caller, id)?;
        let mut meta = BoxMeta::of(&row);
        change(&mut meta.agent)?;
        row.spec = meta.to_json()?;
        self.store.update_box_spec(&row.id, &row.spec)?;
        self.audit(&caller.team_id, Some(caller), Some(&row), kind, data);
        Ok(self.info(row))
    }

    /// Sets the model of the box's agent (`PUT config/model`).
    pub fn set_agent_model(&self, caller: &Caller, id: &str, model: &str) -> CoreResult<BoxInfo> {
        check_model(model)?;
        self.change_agent(
            caller,
            id,
            "box.agent_model",
            json!({"model": model}),
            |a| {
                a.model = Some(model.to_string());
                Ok(())
            },
        )
    }

    /// Replaces the process of a custom harness (`PUT
    /// config/custom-runner`); only a box whose agent is `custom` has one.
    pub fn set_custom_runner(
        &self,
        caller: &Caller,
        id: &str,
        runner: &Value,
    ) -> CoreResult<BoxInfo> {
        let runner = check_custom_runner(runner)?;
        let data = json!({"command": runner.command});
        self.change_agent(caller, id, "box.agent_runner", data, |a| {
            if a.agent.as_deref() != Some(CUSTOM_HARNESS) {
                return Err(CoreError::conflict(
                    "only a box created with agent \"custom\" has a custom_runner",
                ));
            }
            a.custom_runner = Some(runner);
            Ok(())
        })
    }

    /// Enables a skill (enabling one twice changes nothing); answers the
    /// box's skills.
    pub fn add_skill(&self, caller: &Caller, id: &str, skill: &str) -> CoreResult<Vec<String>> {
        check_skill(skill)?;
        let info =
            self.change_agent(caller, id, "box.skill_add", json!({"skill": skill}), |a| {
                if !a.skills.iter().any(|s| s == skill) {
                    if a.skills.len() >= MAX_SKILLS {
                        return Err(CoreError::invalid(format!(
                            "a box enables at most {MAX_SKILLS} skills; remove one first"
                        )));
                    }
                    a.skills.push(skill.to_string());
                }
                Ok(())
            })?;
        Ok(info.meta.agent.skills)
    }

    /// Disables a skill; answers the box's skills.
    pub fn remove_skill(&self, caller: &Caller, id: &str, skill: &str) -> CoreResult<Vec<String>> {
        let info = self.change_agent(
            caller,
            id,
            "box.skill_remove",
            json!({"skill": skill}),
            |a| {
                let before = a.skills.len();
                a.skills.retain(|s| s != skill);
                if a.skills.len() == before {
                    let shown: String = skill.chars().take(200).collect();
                    return Err(CoreError::not_found(format!(
                        "skill {shown:?} is not enabled in this box"
                    )));
                }
                Ok(())
            },
        )?;
        Ok(info.meta.agent.skills)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(agent: &str, model: Option<&str>) -> AgentRequest {
        AgentRequest {
            agent: Some(agent.into()),
            model: model.map(str::to_string),
            ..AgentRequest::default()
        }
    }

    #[test]
    fn harnesses_are_the_documented_ones_and_others_are_named_in_the_error() {
        for h in ["claude-code", "codex", "opencode", "cursor"] {
            assert!(check_agent(req(h, Some("m"))).is_ok(), "{h}");
        }
        let e = check_agent(req("gpt-cli", Some("m")))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("gpt-cli") && e.contains("claude-code, codex"),
            "{e}"
        );
        assert!(
            check_agent(req("codex", None)).is_err(),
            "a model is needed"
        );
    }

    #[test]
    fn custom_needs_a_runner_and_takes_no_key() {
        assert!(check_agent(req("custom", None)).is_err());
        let mut r = req("custom", None);
        r.custom_runner = Some(json!({"command": "my-agent", "args": ["--x"]}));
        let c = check_agent(r.clone()).unwrap();
        assert_eq!(c.config.model.as_deref(), Some("custom"));
        assert_eq!(c.config.custom_runner.unwrap().protocol, RUNNER_PROTOCOL);
        r.api_key = Some(WriteOnly("k".into()));
        assert!(check_agent(r).is_err());
        for bad in [
            json!({"command": ""}),
            json!({"command": "rel/path"}),
            json!({"command": "a", "protocol": "other"}),
            json!({"command": "a", "extra": 1}),
            json!({"command": "a", "args": vec!["x"; 257]}),
        ] {
            assert!(check_custom_runner(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn skills_and_mcp_servers_are_bounded_and_header_values_never_in_errors() {
        assert!(check_skills(&["upstash/qstash-js".into(), "a/b/c".into()]).is_ok());
        for bad in ["one", "a/../b", "a/b/c/d", "a b/c", ""] {
            assert!(check_skill(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("o/r{i}")).collect();
        assert!(check_skills(&many).is_err());
        let (servers, sealed) = check_mcp_servers(&json!([
            {"name": "fs", "source": "npm", "package_or_url": "@m/fs", "args": null},
            {"name": "web", "source": "url", "package_or_url": "https://m.example/sse",
             "headers": {"Authorization": "Bearer s3cr3t-h3ader"}}
        ]))
        .unwrap();
        assert_eq!(servers[1].header_names, vec!["Authorization".to_string()]);
        assert!(!serde_json::to_string(&servers).unwrap().contains("s3cr3t"));
        assert_eq!(sealed[0].2.as_str(), "Bearer s3cr3t-h3ader");
        let e = check_mcp_servers(&json!([{"name": "w", "source": "url",
            "package_or_url": "https://m.example", "headers": {"A": 5, "B": "s3cr3t"}}]))
        .unwrap_err()
        .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = check_mcp_servers(&json!([{"name": "w", "source": "url",
            "package_or_url": "https://m.example", "headers": {"A": "s3cr3t\n"}}]))
        .unwrap_err()
        .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
    }
}
