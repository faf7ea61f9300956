//! Secrets that never enter a box, against a real `boxd serve`: attach
//! headers and placeholder secrets injected by boxd's TLS-intercepting
//! proxy into requests to local HTTPS upstreams (certificates from a test
//! CA the daemon trusts through `[tls] extra_roots`), while the values
//! appear nowhere a box, a log, the database or the API could show them.
//! Each test fails if the protection it names is missing.

mod common;

use base64::Engine;
use common::daemon::TestDaemon;
use common::https::{contains, HttpsServer};
use common::test_ca::{self_signed_config, TestCa};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;

const HEADER_VALUE: &str = "Bearer sk_live_HEADERSECRET_7f3a9c1e5b";
const SECRET_VALUE: &str = "sk-PLACEHOLDERSECRET-4d2b8e6f0a1c";
const TEAM_VALUE: &str = "team-TEAMSECRET-0badc0ffee42";

/// A daemon whose proxy trusts `ca` and sends each `(name, port)` to that
/// port on 127.0.0.1.
fn daemon(ca: &TestCa, upstreams: &[(&str, u16)]) -> Option<(TestDaemon, tempdir::Dir)> {
    let dir = tempdir::Dir::new("secrets");
    let ca_path = dir.0.join("test-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let mut toml = String::from("allow_ranges = [\"127.0.0.0/8\"]\n[network.upstreams]\n");
    for (name, port) in upstreams {
        toml.push_str(&format!("\"{name}\" = \"127.0.0.1:{port}\"\n"));
    }
    toml.push_str(&format!("[tls]\nextra_roots = [{:?}]\n", ca_path));
    TestDaemon::start_with_network(&toml).map(|d| (d, dir))
}

mod tempdir {
    /// A scratch folder removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(what: &str) -> Dir {
            let d = std::env::temp_dir().join(super::common::unique(&format!("boxd-{what}")));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `script` in the box; returns stdout + stderr (asserting exit 0
/// unless `may_fail`). Every output is kept in `seen` for the final search.
fn run(d: &TestDaemon, id: &str, script: &str, seen: &mut String) -> (i64, String) {
    let (code, out, err) = d.sh(id, script);
    seen.push_str(&out);
    seen.push_str(&err);
    (code, format!("{out}{err}"))
}

fn ok(d: &TestDaemon, id: &str, script: &str, seen: &mut String) -> String {
    let (code, out) = run(d, id, script, seen);
    assert_eq!(code, 0, "{script}: {out}");
    out
}

/// The box's `net.http` audit events.
fn http_events(d: &TestDaemon, id: &str) -> Vec<Value> {
    let (s, v) = d.get(&format!("/v2/audit?box={id}&kind=net.http&limit=1000"));
    assert_eq!(s, 200, "{v}");
    v["events"]
        .as_array()
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_default()
}

/// The audited `net.http` events reach the store in batches: wait (bounded)
/// until `n` are there.
fn wait_http_events(d: &TestDaemon, id: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let events = http_events(d, id);
        if events.len() >= n {
            return events;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let events = http_events(d, id);
    panic!(
        "expected {n} net.http events, got {}: {events:?}",
        events.len()
    );
}

/// Every file under `dir` (the daemon's data dir: database, WAL, boxes'
/// layers, logs) and `also`, searched for each value.
fn assert_absent_from_files(dir: &Path, also: &[&Path], values: &[&str]) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files: Vec<std::path::PathBuf> = also.iter().map(|p| p.to_path_buf()).collect();
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.path() != dir.join("pool.img") {
                // The storage pool's image is searched through its mount
                // (`pool/`): read whole, its sparse gigabytes would fill
                // the memory.
                files.push(e.path());
            }
        }
    }
    assert!(files.len() > 3, "nothing to search in {}", dir.display());
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for v in values {
            assert!(
                !contains(&bytes, v.as_bytes()),
                "{v} found in {}",
                f.display()
            );
        }
    }
}

/// Every API answer about box `id` (the box, the list, its logs, the
/// audit trail), concatenated: where a secret must never appear.
fn api_answers_about(d: &TestDaemon, id: &str) -> String {
    let mut seen = String::new();
    for path in [
        format!("/v2/box/{id}"),
        "/v2/box".to_string(),
        format!("/v2/box/{id}/logs"),
        format!("/v2/audit?box={id}&limit=1000"),
        "/v2/audit?limit=1000".to_string(),
    ] {
        let (_, v) = d.get(&path);
        seen.push_str(&v.to_string());
    }
    seen
}

#[test]
fn attach_header_and_secret_reach_the_upstream_and_never_the_box() {
    let ca = TestCa::new();
    let api = HttpsServer::start(ca.server_config(&["api.example.test"]));
    let Some((d, _dir)) = daemon(&ca, &[("api.example.test", api.port)]) else {
        return;
    };
    let mut seen = String::new();
    let (s, created) = d.post(
        "/v2/box",
        json!({
            "attach_headers": {"api.example.test": {"Authorization": HEADER_VALUE}},
            "secrets": {"MY_TOKEN": {"hosts": ["api.example.test"], "value": SECRET_VALUE}},
        }),
    );
    assert_eq!(s, 200, "{created}");
    seen.push_str(&created.to_string());
    let id = created["id"].as_str().unwrap().to_string();
    // The API shows names and hosts only.
    assert_eq!(
        created["attach_headers"],
        json!({"api.example.test": ["Authorization"]})
    );
    assert_eq!(
        created["secrets"]["MY_TOKEN"]["hosts"],
        json!(["api.example.test"])
    );

    // The box holds a placeholder, not the value.
    let placeholder = ok(&d, &id, "printf %s \"$MY_TOKEN\"", &mut seen);
    assert!(
        placeholder.len() >= 32 && placeholder != SECRET_VALUE,
        "{placeholder}"
    );

    // curl, with the box's own (case-varied, duplicated) Authorization
    // replaced and the placeholder substituted.
    let out = ok(
        &d,
        &id,
        "curl -sS --fail https://api.example.test/one -H 'authorization: Bearer box-own' \
         -H 'AUTHORIZATION: Bearer box-dup' -H \"X-Token: $MY_TOKEN\"",
        &mut seen,
    );
    assert_eq!(out.trim(), "ok");
    let got = api.received_str();
    assert!(
        got.contains(&format!("Authorization: {HEADER_VALUE}")),
        "{got}"
    );
    assert!(got.contains(&format!("X-Token: {SECRET_VALUE}")), "{got}");
    assert!(
        !got.contains("box-own") && !got.contains("box-dup"),
        "{got}"
    );
    assert!(!got.contains(&placeholder), "{got}");

    // Every common client trusts the intercepted connection with no flag.
    let clients = [
        "python3 -c \"import urllib.request as u; print(u.urlopen('https://api.example.test/urllib').read().decode())\"",
        "python3 -c \"import requests; print(requests.get('https://api.example.test/requests').text)\"",
        "node -e \"fetch('https://api.example.test/node').then(r => r.text()).then(t => console.log(t))\"",
    ];
    for c in clients {
        assert_eq!(ok(&d, &id, c, &mut seen).trim(), "ok", "{c}");
    }
    // git speaks HTTPS with the box's trust too: the server is no git
    // server, but the TLS handshake and the request succeed.
    let (_, out) = run(
        &d,
        &id,
        "git ls-remote https://api.example.test/git/repo.git 2>&1",
        &mut seen,
    );
    assert!(!out.to_lowercase().contains("certificate"), "{out}");
    let got = api.received_str();
    for path in ["/urllib", "/requests", "/node", "/git/repo.git/info/refs"] {
        assert!(got.contains(path), "{path} not received: {got}");
    }
    assert_eq!(
        got.matches(&format!("Authorization: {HEADER_VALUE}"))
            .count(),
        got.matches("GET /").count(),
        "every request injected: {got}"
    );

    // Nothing in the box holds a value: env, every process's environ and
    // cmdline, every readable file. The values are split in the script (so
    // no command line holds them) and reach grep through a pipe. `/usr` is
    // the host's read-only `/usr` under the box's own upper layer, which
    // the search of the daemon's files below covers.
    let split = |v: &str| format!("'{}' '{}'", &v[..10], &v[10..]);
    let find = |patterns: &str| {
        format!(
            "printf '%s%s\\n' {patterns} | grep -rlsF -f - --exclude-dir=proc \
             --exclude-dir=sys --exclude-dir=dev --exclude-dir=usr / | sed 's/^/found:/'"
        )
    };
    let box_search = format!(
        "env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null; echo; {}; {} {}",
        find(&format!("{} {}", split(HEADER_VALUE), split(SECRET_VALUE))),
        "printf %s \"$MY_TOKEN\" > /tmp/placeholder-copy;",
        // The same search finds what is there: the placeholder's copy.
        find(&split(&placeholder)),
    );
    let everything = ok(&d, &id, &box_search, &mut seen);
    assert!(everything.contains(&placeholder), "the search saw the env");
    let found: Vec<&str> = everything
        .lines()
        .filter(|l| l.starts_with("found:"))
        .collect();
    assert_eq!(found, ["found:/tmp/placeholder-copy"], "{everything}");

    // Audit: one net.http event per request, names only.
    let events = wait_http_events(&d, &id, 5);
    let first = events
        .iter()
        .find(|e| e.to_string().contains("/one"))
        .expect("the curl request is audited");
    let text = first.to_string();
    assert!(
        text.contains("Authorization") && text.contains("MY_TOKEN"),
        "{text}"
    );

    // Every API answer about the box.
    seen.push_str(&api_answers_about(&d, &id));
    for v in [HEADER_VALUE, SECRET_VALUE] {
        assert!(!seen.contains(v), "{v} reached the box or the API: {seen}");
    }
    // The daemon's files (database, WAL, layers) and its log.
    assert_absent_from_files(&d.dir, &[&d.log_path()], &[HEADER_VALUE, SECRET_VALUE]);
}

#[test]
fn placeholder_sent_to_another_host_stays_a_placeholder_and_is_audited() {
    let ca = TestCa::new();
    let api = HttpsServer::start(ca.server_config(&["api.example.test"]));
    let other = HttpsServer::start(ca.server_config(&["other.example.test"]));
    let plain = HttpsServer::start_plain();
    let Some((d, _dir)) = daemon(
        &ca,
        &[
            ("api.example.test", api.port),
            ("other.example.test", other.port),
            ("plain.example.test", plain.port),
        ],
    ) else {
        return;
    };
    let mut seen = String::new();
    let id = d.create(json!({
        "secrets": {"MY_TOKEN": {"hosts": ["api.example.test"], "value": SECRET_VALUE}},
        // other.example.test is intercepted (it has a rule), so the proxy
        // sees what goes there; plain.example.test has a rule too.
        "attach_headers": {
            "other.example.test": {"X-Other": "other-rule"},
            "plain.example.test": {"X-Plain": HEADER_VALUE},
            "api.example.test": {"X-Api": HEADER_VALUE},
        },
    }));
    // Header, query, body and Basic auth to the unapproved host.
    ok(
        &d,
        &id,
        "curl -sS --fail \"https://other.example.test/h?token=$MY_TOKEN\" -H \"X-Token: $MY_TOKEN\" \
         -u \"user:$MY_TOKEN\" --data \"token=$MY_TOKEN\"",
        &mut seen,
    );
    let placeholder = ok(&d, &id, "printf %s \"$MY_TOKEN\"", &mut seen);
    let got = other.received_str();
    assert!(!got.contains(SECRET_VALUE), "{got}");
    assert_eq!(
        got.matches(&placeholder).count(),
        3,
        "header, query, body: {got}"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{placeholder}"));
    assert!(
        got.contains(&basic),
        "Basic credentials left as sent: {got}"
    );
    let events = wait_http_events(&d, &id, 1);
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        text.contains("violation") && text.contains("MY_TOKEN"),
        "{text}"
    );
    for place in ["header", "query", "body", "basic_auth"] {
        assert!(text.contains(place), "no {place} violation in {text}");
    }

    // To its own host, Basic credentials are substituted inside base64.
    ok(
        &d,
        &id,
        "curl -sS --fail https://api.example.test/basic -u \"user:$MY_TOKEN\"",
        &mut seen,
    );
    let real = base64::engine::general_purpose::STANDARD.encode(format!("user:{SECRET_VALUE}"));
    assert!(api.received_str().contains(&real), "{}", api.received_str());

    // Never injected: another port (spliced TLS, the box's own -k since the
    // upstream's certificate is not boxd's) and plain HTTP on port 80.
    api.clear();
    ok(
        &d,
        &id,
        "curl -sSk --fail https://api.example.test:8443/port -H \"X-Token: $MY_TOKEN\"",
        &mut seen,
    );
    let got = api.received_str();
    assert!(got.contains("/port"), "{got}");
    assert!(
        !got.contains(HEADER_VALUE) && !got.contains(SECRET_VALUE),
        "{got}"
    );
    ok(
        &d,
        &id,
        "curl -sS --fail http://plain.example.test/plain -H \"X-Token: $MY_TOKEN\"",
        &mut seen,
    );
    let got = plain.received_str();
    assert!(
        got.contains("/plain") && got.contains(&placeholder),
        "{got}"
    );
    assert!(
        !got.contains(HEADER_VALUE) && !got.contains(SECRET_VALUE),
        "{got}"
    );
    assert!(!seen.contains(SECRET_VALUE) && !seen.contains(HEADER_VALUE));
}

#[test]
fn upstreams_failing_verification_get_502_and_zero_bytes() {
    let ca = TestCa::new();
    // A self-signed certificate at the approved name, and an approved
    // name whose address serves another name's (valid) certificate — as
    // if DNS pointed it at an attacker.
    let fake = HttpsServer::start(self_signed_config(&["api.example.test"]));
    let attacker = HttpsServer::start(ca.server_config(&["attacker.example.test"]));
    let Some((d, _dir)) = daemon(
        &ca,
        &[
            ("api.example.test", fake.port),
            ("hijacked.example.test", attacker.port),
        ],
    ) else {
        return;
    };
    let mut seen = String::new();
    let id = d.create(json!({
        "attach_headers": {
            "api.example.test": {"Authorization": HEADER_VALUE},
            "hijacked.example.test": {"Authorization": HEADER_VALUE},
        },
        "secrets": {"MY_TOKEN": {"hosts": ["*.example.test"], "value": SECRET_VALUE}},
    }));
    for host in ["api.example.test", "hijacked.example.test"] {
        let out = ok(
            &d,
            &id,
            &format!(
                "curl -sS -o /dev/stderr -w '%{{http_code}}' https://{host}/x -H \"X-Token: $MY_TOKEN\""
            ),
            &mut seen,
        );
        assert!(out.contains("502"), "{host}: {out}");
        assert!(
            out.contains("verif") || out.contains("certificate"),
            "{host}: {out}"
        );
    }
    assert!(fake.received().is_empty(), "{}", fake.received_str());
    assert!(
        attacker.received().is_empty(),
        "{}",
        attacker.received_str()
    );
    assert!(!seen.contains(SECRET_VALUE) && !seen.contains(HEADER_VALUE));
    let events = wait_http_events(&d, &id, 2);
    assert!(
        events.iter().all(|e| e.to_string().contains("502")),
        "{events:?}"
    );
}

#[test]
fn team_rules_merge_under_box_rules_and_everything_survives_a_restart() {
    let ca = TestCa::new();
    let api = HttpsServer::start(ca.server_config(&["api.example.test"]));
    let db = HttpsServer::start(ca.server_config(&["db.example.test"]));
    let Some((mut d, _dir)) = daemon(
        &ca,
        &[("api.example.test", api.port), ("db.example.test", db.port)],
    ) else {
        return;
    };
    let put = |d: &TestDaemon, pattern: &str, body: Value| {
        d.call(
            Method::PUT,
            &format!("/v2/box/settings/attach-headers/{pattern}"),
            Some(body),
        )
    };
    let (s, v) = put(&d, "api.example.test", json!({"X-Team": TEAM_VALUE}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = put(&d, "*.example.test", json!({"X-Wild": TEAM_VALUE}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"attach_headers": {"*.example.test": ["X-Wild"], "api.example.test": ["X-Team"]}})
    );
    assert!(!v.to_string().contains(TEAM_VALUE));
    // Refused, with the rule named and no value quoted.
    for (pattern, body) in [
        ("api.example.test", json!({"X-Bad": "a\r\nX-Injected: 1"})),
        ("api.example.test", json!({"Content-Length": "5"})),
        ("api.example.test", json!({"Proxy-Authorization": "x"})),
        ("Upper.example.test", json!({"X-Key": "v"})),
        ("*.test", json!({"X-Key": "v"})),
    ] {
        let (s, v) = put(&d, pattern, body);
        assert_eq!(s, 400, "{pattern}: {v}");
        assert!(!v.to_string().contains("X-Injected"), "{v}");
    }
    let (s, v) = d.post(
        "/v2/box",
        json!({"secrets": {"K": {"hosts": ["api.example.test"], "value": "a\nb"}}}),
    );
    assert_eq!(s, 400, "{v}");

    // The box's rule for api.example.test replaces the team's; the team's
    // wildcard still applies to db.example.test.
    let id = d.create(json!({
        "attach_headers": {"api.example.test": {"X-Box": HEADER_VALUE}},
        "secrets": {"MY_TOKEN": {"hosts": ["db.example.test"], "value": SECRET_VALUE}},
    }));
    let mut seen = String::new();
    let request_both = |d: &TestDaemon, seen: &mut String| {
        ok(
            d,
            &id,
            "curl -sS --fail https://api.example.test/a && \
             curl -sS --fail https://db.example.test/b -H \"X-Token: $MY_TOKEN\"",
            seen,
        );
    };
    request_both(&d, &mut seen);
    let got = api.received_str();
    assert!(got.contains(&format!("X-Box: {HEADER_VALUE}")), "{got}");
    assert!(!got.contains("X-Team") && !got.contains("X-Wild"), "{got}");
    let got = db.received_str();
    assert!(got.contains(&format!("X-Wild: {TEAM_VALUE}")), "{got}");
    assert!(got.contains(&format!("X-Token: {SECRET_VALUE}")), "{got}");

    // A box's rules are fixed at create: removing the team's wildcard
    // changes nothing for it, even across a restart.
    let (s, _) = d.delete("/v2/box/settings/attach-headers/*.example.test");
    assert_eq!(s, 200);
    let (s, _) = d.delete("/v2/box/settings/attach-headers/*.example.test");
    assert_eq!(s, 404);
    // Rotate the master key on the way: refused while the daemon runs,
    // done while it is stopped; the values open under the new key after.
    let rotate = |d: &TestDaemon| {
        std::process::Command::new(common::daemon::BOXD)
            .arg("--data-dir")
            .arg(&d.dir)
            .arg("rotate-master-key")
            .output()
            .expect("run boxd rotate-master-key")
    };
    let out = rotate(&d);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("stop"),
        "{out:?}"
    );
    d.stop();
    let out = rotate(&d);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.contains("new master key k2") && said.contains("in use: k2"),
        "{said}"
    );
    d.start_again();
    api.clear();
    db.clear();
    request_both(&d, &mut seen);
    assert!(api
        .received_str()
        .contains(&format!("X-Box: {HEADER_VALUE}")));
    let got = db.received_str();
    assert!(got.contains(&format!("X-Wild: {TEAM_VALUE}")), "{got}");
    assert!(got.contains(&format!("X-Token: {SECRET_VALUE}")), "{got}");
    // A box made now no longer gets the deleted team rule.
    let fresh = d.create(json!({}));
    db.clear();
    // No rule: spliced, so the box meets the upstream's own certificate.
    ok(
        &d,
        &fresh,
        "curl -sSk --fail https://db.example.test/c",
        &mut seen,
    );
    assert!(
        !db.received_str().contains("X-Wild"),
        "{}",
        db.received_str()
    );

    for v in [HEADER_VALUE, SECRET_VALUE, TEAM_VALUE] {
        assert!(!seen.contains(v), "{v} reached the box: {seen}");
    }
    assert_absent_from_files(
        &d.dir,
        &[&d.log_path()],
        &[HEADER_VALUE, SECRET_VALUE, TEAM_VALUE],
    );
}

const AGENT_KEY: &str = "sk-ant-AGENTKEYSECRET-9e1f3b5d7a";
const MCP_HEADER: &str = "Bearer mcp-MCPHEADERSECRET-2c4e6a8b";

#[test]
fn agent_api_key_and_mcp_headers_never_reach_the_box_the_api_or_the_daemon_files() {
    let Some(d) = TestDaemon::start() else {
        return;
    };
    let (s, created) = d.post(
        "/v2/box",
        json!({
            "agent": "claude-code",
            "model": "anthropic/claude-sonnet-4-5",
            "agent_api_key": AGENT_KEY,
            "skills": ["upstash/qstash-js"],
            "mcp_servers": [
                {"name": "web", "source": "url", "package_or_url": "https://mcp.example.com/sse",
                 "headers": {"Authorization": MCP_HEADER}}
            ]
        }),
    );
    assert_eq!(s, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // The configuration is there, its write-only values are not.
    assert_eq!(created["agent"], "claude-code");
    assert_eq!(created["agent_api_key_set"], true);
    assert_eq!(
        created["mcp_servers"][0]["header_names"],
        json!(["Authorization"])
    );
    let mut seen = created.to_string();

    // Nothing in the box holds a value (as in the test above: env, every
    // process's environ and cmdline, every readable file).
    let split = |v: &str| format!("'{}' '{}'", &v[..10], &v[10..]);
    let script = format!(
        "env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null; echo; \
         printf '%s%s\\n' {} {} | grep -rlsF -f - --exclude-dir=proc --exclude-dir=sys \
         --exclude-dir=dev --exclude-dir=usr / | sed 's/^/found:/'; echo searched",
        split(AGENT_KEY),
        split(MCP_HEADER)
    );
    let everything = ok(&d, &id, &script, &mut seen);
    assert!(everything.contains("searched"), "{everything}");
    let found: Vec<&str> = everything
        .lines()
        .filter(|l| l.starts_with("found:"))
        .collect();
    assert!(found.is_empty(), "{found:?}");

    // Every API answer about the box, a config change and a refused create
    // that quotes its fields.
    let (_, v) = d.call(
        Method::PUT,
        &format!("/v2/box/{id}/config/model"),
        Some(json!({"model": "anthropic/claude-opus-4-5"})),
    );
    seen.push_str(&v.to_string());
    let (s, v) = d.post(
        "/v2/box",
        json!({"agent": "codex", "model": "m", "agent_api_key": format!("{AGENT_KEY}\n")}),
    );
    assert_eq!(s, 400, "{v}");
    seen.push_str(&v.to_string());
    let (s, v) = d.post(
        "/v2/box",
        json!({"mcp_servers": [{"name": "w", "source": "url", "package_or_url": "https://m.example",
            "headers": {"A": format!("{MCP_HEADER}\r\n")}}]}),
    );
    assert_eq!(s, 400, "{v}");
    seen.push_str(&v.to_string());
    seen.push_str(&api_answers_about(&d, &id));
    for v in [AGENT_KEY, MCP_HEADER] {
        assert!(!seen.contains(v), "{v} reached the box or the API: {seen}");
    }
    // The daemon's files (database, WAL, layers) and its log: sealed only.
    assert_absent_from_files(&d.dir, &[&d.log_path()], &[AGENT_KEY, MCP_HEADER]);
    let (s, _) = d.delete(&format!("/v2/box/{id}"));
    assert_eq!(s, 200);
}
