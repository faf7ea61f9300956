//! The client commands other than `cp`, `headers` and `snapshot`:
//! `create` (also `--from-snapshot`), `ls`, `exec`, `sh`, `rm`, `status`. Each turns its arguments into one or more API requests
//! and prints the answer for people (tables, `key: value` lines) or, with
//! `--json`, as JSON.
//!
//! Owns the parsing of its arguments (sizes, `K=V`; box rules such as
//! label limits are the server's, whose 400 names the problem) and
//! the exit codes: a command's own code for `exec`, 2 for `sh` (not
//! available yet), 1 for any failure. It never talks to the runtime or the
//! store, and never prints the API key.

use super::client::Client;
use super::table;
use super::trailer::{Trailer, TrailerParser};
use super::{out, ClientCommand};
use anyhow::{anyhow, bail, Context, Result};
use boxd_api::{BoxData, BoxSize, CreateBoxRequest, ExecRequest, ExecResponse};
use reqwest::Method;
use std::collections::BTreeMap;
use std::io::Write;

/// Runs one client command; returns its exit code.
pub async fn run(client: &Client, json: bool, cmd: &ClientCommand) -> Result<i32> {
    match cmd {
        ClientCommand::Create {
            name,
            from_snapshot,
            runtime,
            size,
            env,
            labels,
        } => {
            let req = CreateBoxRequest {
                name: name.clone(),
                runtime: runtime.clone(),
                size: size.as_deref().map(parse_size).transpose()?,
                env_vars: Some(parse_env(env)?).filter(|e| !e.is_empty()),
                labels: Some(labels.clone()).filter(|l| !l.is_empty()),
                snapshot_id: from_snapshot.clone(),
                ..CreateBoxRequest::default()
            };
            create(client, json, &req).await
        }
        ClientCommand::Ls { label } => ls(client, json, label.as_deref()).await,
        ClientCommand::Exec {
            target,
            workdir,
            no_stream,
            command,
        } => {
            let req = ExecRequest {
                command: command.clone(),
                folder: workdir.clone(),
                ..ExecRequest::default()
            };
            if *no_stream || json {
                exec_sync(client, json, target, &req).await
            } else {
                exec_stream(client, target, &req).await
            }
        }
        ClientCommand::Sh { target } => sh(client, target).await,
        ClientCommand::Cp { src, dest } => super::cp::run(client, src, dest, json).await,
        ClientCommand::Rm { targets } => rm(client, json, targets).await,
        ClientCommand::Status { target } => status(client, json, target).await,
        ClientCommand::Headers { command } => super::headers::run(client, json, command).await,
        ClientCommand::Snapshot { command } => super::snapshots::run(client, json, command).await,
    }
}

/// `small`, `medium` or `large`.
pub fn parse_size(s: &str) -> Result<BoxSize> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| anyhow!("--size {s:?}: use small, medium or large"))
}

/// `K=V` pairs; the key must not be empty.
pub fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--env takes K=V, got {p:?}"),
        })
        .collect()
}

pub(super) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    out(format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// `POST /v2/box`, or `/v2/box/from-snapshot` when `req` names a snapshot.
async fn create(client: &Client, json: bool, req: &CreateBoxRequest) -> Result<i32> {
    let url = match req.snapshot_id {
        Some(_) => client.url(&["v2", "box", "from-snapshot"]),
        None => client.url(&["v2", "box"]),
    };
    let b: serde_json::Value = client
        .json(client.request(Method::POST, url).json(req))
        .await?;
    if json {
        print_json(&b)?;
    } else {
        let id = b["id"]
            .as_str()
            .ok_or_else(|| anyhow!("boxd answered the create without a box id: {b}"))?;
        out(format!("{id}\n"))?;
    }
    Ok(0)
}

/// The rows of `boxd ls`.
pub fn ls_table(boxes: &[BoxData], now: i64) -> String {
    let rows: Vec<Vec<String>> = boxes
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                table::or_dash(b.name.as_deref().unwrap_or("")),
                b.status.as_str().to_string(),
                b.runtime.clone(),
                b.size.as_str().to_string(),
                table::or_dash(&b.labels.join(",")),
                table::age(now, b.created_at),
            ]
        })
        .collect();
    table::render(
        &[
            "ID", "NAME", "STATUS", "RUNTIME", "SIZE", "LABELS", "CREATED",
        ],
        &rows,
    )
}

async fn ls(client: &Client, json: bool, label: Option<&str>) -> Result<i32> {
    let mut url = client.url(&["v2", "box"]);
    if let Some(l) = label {
        url.query_pairs_mut().append_pair("label", l);
    }
    let v: serde_json::Value = client.json(client.request(Method::GET, url)).await?;
    if json {
        print_json(&v)?;
    } else {
        let boxes: Vec<BoxData> =
            serde_json::from_value(v).context("boxd's box list has an unexpected shape")?;
        out(ls_table(&boxes, table::now_secs()))?;
    }
    Ok(0)
}

/// The exit code a shell would see for `code`.
fn exit_code(code: i32) -> i32 {
    if (0..=255).contains(&code) {
        code
    } else {
        1
    }
}

async fn exec_stream(client: &Client, target: &str, req: &ExecRequest) -> Result<i32> {
    let url = client.url(&["v2", "box", target, "exec-stream"]);
    let mut resp = client
        .send(client.request(Method::POST, url).json(req))
        .await?;
    let mut parser = TrailerParser::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => out(parser.feed(&c))?,
            Ok(None) => break,
            Err(e) => {
                let (rest, _) = parser.finish();
                out(rest)?;
                return Err(client.transport_error(e))
                    .context("the command's output stream broke off");
            }
        }
    }
    let (rest, trailer) = parser.finish();
    out(rest)?;
    match trailer {
        Some(Trailer::Exit(e)) => Ok(exit_code(e.exit_code)),
        Some(Trailer::Error(msg)) => bail!("{msg}"),
        None => bail!("the output stream ended without the command's exit status"),
    }
}

async fn exec_sync(client: &Client, json: bool, target: &str, req: &ExecRequest) -> Result<i32> {
    let url = client.url(&["v2", "box", target, "exec"]);
    let v: serde_json::Value = client
        .json(client.request(Method::POST, url).json(req))
        .await?;
    let r: ExecResponse =
        serde_json::from_value(v.clone()).context("boxd's exec answer has an unexpected shape")?;
    if json {
        print_json(&v)?;
    } else {
        out(r.output.as_bytes())?;
        let mut err = std::io::stderr();
        let _ = err.write_all(r.error.as_bytes()).and_then(|_| err.flush());
    }
    Ok(exit_code(r.exit_code))
}

/// Exit code of `sh` while interactive sessions do not exist.
const SH_UNAVAILABLE: i32 = 2;

async fn sh(client: &Client, target: &str) -> Result<i32> {
    // Ask the session endpoint anyway, so the message reflects the server
    // (a 501 names what is missing; a 404 may say the box does not exist).
    let url = client.url(&["v2", "box", target, "exec-session"]);
    let said = match client.send(client.request(Method::GET, url)).await {
        Ok(_) => String::new(),
        Err(e) => match e.downcast_ref::<super::client::ApiError>() {
            Some(api) => format!(" (boxd said: {api})"),
            None => return Err(e),
        },
    };
    eprintln!(
        "boxd: interactive shells need the exec-session endpoint (a WebSocket), which boxd does \
         not offer yet{said}.\nRun commands one at a time instead: boxd exec {target} -- sh -c '...'"
    );
    Ok(SH_UNAVAILABLE)
}

async fn rm(client: &Client, json: bool, targets: &[String]) -> Result<i32> {
    delete_each(client, json, "box", targets, |t| vec!["v2", "box", t]).await
}

/// `DELETE`s each target (its path from `path`), reporting each one as
/// `deleted T` (or `{kind: T, deleted, error}` with `--json`); exit 1 if
/// any failed.
pub(super) async fn delete_each<'a>(
    client: &Client,
    json: bool,
    kind: &str,
    targets: &'a [String],
    path: impl Fn(&'a str) -> Vec<&'a str>,
) -> Result<i32> {
    let mut results = Vec::new();
    let mut failed = false;
    for t in targets {
        let url = client.url(&path(t));
        match client.send(client.request(Method::DELETE, url)).await {
            Ok(_) => {
                if !json {
                    out(format!("deleted {t}\n"))?;
                }
                results.push(serde_json::json!({kind: t, "deleted": true}));
            }
            Err(e) => {
                failed = true;
                if !json {
                    eprintln!("boxd: {t}: {e:#}");
                }
                results.push(
                    serde_json::json!({kind: t, "deleted": false, "error": format!("{e:#}")}),
                );
            }
        }
    }
    if json {
        print_json(&results)?;
    }
    Ok(i32::from(failed))
}

/// `key: value` lines of `boxd status`.
pub fn status_lines(b: &BoxData, now: i64) -> String {
    let mut lines = vec![
        ("id", b.id.clone()),
        ("name", table::or_dash(b.name.as_deref().unwrap_or(""))),
        ("status", b.status.as_str().to_string()),
        ("runtime", b.runtime.clone()),
        ("size", b.size.as_str().to_string()),
        ("labels", table::or_dash(&b.labels.join(","))),
        (
            "created",
            format!(
                "{} ({})",
                table::utc(b.created_at),
                table::age(now, b.created_at)
            ),
        ),
    ];
    if b.keep_alive {
        lines.push(("keep alive", "yes".to_string()));
    }
    for (k, v) in &b.metadata {
        lines.push(("metadata", format!("{k}={v}")));
    }
    for (pattern, names) in &b.attach_headers {
        lines.push(("attach headers", format!("{pattern}: {}", names.join(", "))));
    }
    for (name, info) in &b.secrets {
        lines.push(("secret", format!("{name} → {}", info.hosts.join(", "))));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

async fn status(client: &Client, json: bool, target: &str) -> Result<i32> {
    let url = client.url(&["v2", "box", target]);
    let v: serde_json::Value = client.json(client.request(Method::GET, url)).await?;
    if json {
        print_json(&v)?;
    } else {
        let b: BoxData = serde_json::from_value(v).context("boxd's box has an unexpected shape")?;
        out(status_lines(&b, table::now_secs()))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxd_api::BoxStatus;

    fn sample() -> BoxData {
        BoxData {
            id: "box_1".into(),
            status: BoxStatus::Running,
            name: Some("web".into()),
            labels: vec!["a".into(), "env:prod".into()],
            runtime: "host".into(),
            size: BoxSize::Small,
            disk_mib: None,
            disk_used_bytes: None,
            keep_alive: false,
            created_at: 1_000_000 - 180,
            updated_at: 1_000_000,
            metadata: BTreeMap::new(),
            network_policy: serde_json::json!({"mode": "allow-all"}),
            allow_net: None,
            attach_headers: BTreeMap::new(),
            secrets: BTreeMap::new(),
            volumes: Vec::new(),
            agent: None,
            model: None,
            enabled_skills: Vec::new(),
            custom_runner: None,
            mcp_servers: Vec::new(),
            agent_api_key_set: false,
            ephemeral: false,
            expires_at: None,
            total_cpu_ns: None,
            last_activity_at: None,
        }
    }

    #[test]
    fn ls_shows_one_row_per_box() {
        let mut other = sample();
        other.id = "box_2".into();
        other.name = None;
        other.labels = vec![];
        other.status = BoxStatus::Idle;
        assert_eq!(
            ls_table(&[sample(), other], 1_000_000),
            "ID     NAME  STATUS   RUNTIME  SIZE   LABELS      CREATED\n\
             box_1  web   running  host     small  a,env:prod  3m ago\n\
             box_2  -     idle     host     small  -           3m ago\n"
        );
    }

    #[test]
    fn status_is_aligned_key_value_lines() {
        let s = status_lines(&sample(), 1_000_000);
        assert!(
            s.starts_with("id:      box_1\nname:    web\nstatus:  running\n"),
            "{s}"
        );
        assert!(s.contains("labels:  a,env:prod\n"), "{s}");
        assert!(
            s.contains("created: 1970-01-12 13:43:40 UTC (3m ago)\n"),
            "{s}"
        );
        let mut b = sample();
        b.attach_headers
            .insert("api.stripe.com".into(), vec!["Authorization".into()]);
        b.secrets.insert(
            "OPENAI_API_KEY".into(),
            boxd_api::SecretInfo {
                hosts: vec!["api.openai.com".into()],
                ..Default::default()
            },
        );
        let s = status_lines(&b, 1_000_000);
        assert!(
            s.contains("attach headers: api.stripe.com: Authorization\n"),
            "{s}"
        );
        assert!(
            s.contains("secret:         OPENAI_API_KEY → api.openai.com\n"),
            "{s}"
        );
    }

    #[test]
    fn arguments_are_checked_before_sending() {
        assert_eq!(parse_size("Medium").unwrap(), BoxSize::Medium);
        assert!(parse_size("huge").is_err());
        let env = parse_env(&["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        assert_eq!(env["B"], "x=y");
        assert_eq!(env["C"], "");
        assert!(parse_env(&["=1".into()]).is_err());
        assert!(parse_env(&["NOEQ".into()]).is_err());
    }

    #[test]
    fn out_of_range_exit_codes_read_as_failure() {
        assert_eq!(exit_code(3), 3);
        assert_eq!(exit_code(255), 255);
        assert_eq!(exit_code(-1), 1);
        assert_eq!(exit_code(300), 1);
    }
}
