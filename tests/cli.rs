//! The `boxd` client commands and `boxd keys` against a real daemon (one
//! `common::daemon::TestDaemon` per test), plus the errors a user sees
//! without one.

mod common;

use common::daemon::{TestDaemon, BOXD};
use common::{unique, AGENT};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one CLI invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `c` with its output captured, killing it after [`CLI_TIMEOUT`].
fn run_bounded(mut c: Command) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start boxd");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for boxd") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// A scratch folder under /tmp, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = PathBuf::from("/tmp").join(unique(tag));
        std::fs::create_dir_all(&p).expect("create a temp dir");
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A data dir's storage pool first (the CLI mounts it).
        boxd_runtime::storage::unmount(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon plus a scratch folder the CLI runs in. On drop (also on
/// panic) the boxes are deleted through the API, the daemon gets SIGTERM
/// (when the test did not panic: `stop` checks that it exits within a
/// bounded time), and `TestDaemon`'s own drop kills whatever is left and
/// removes its boxes, cgroups and data dir.
struct Cli {
    d: TestDaemon,
    work: TempDir,
}

impl Cli {
    fn start() -> Option<Cli> {
        Some(Cli {
            d: TestDaemon::start()?,
            work: TempDir::new("boxd-cli-work"),
        })
    }

    /// A `boxd` command aimed at the daemon: URL, key and data dir through
    /// the environment, nothing inherited from the test's.
    fn cmd(&self) -> Command {
        let mut c = Command::new(BOXD);
        c.env("BOXD_URL", &self.d.url)
            .env("BOXD_API_KEY", &self.d.key)
            .env("BOXD_DATA_DIR", &self.d.dir)
            .env_remove("BOXD_LOG")
            .current_dir(self.work.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        run_bounded(c)
    }

    /// Runs `boxd ARGS`; it must exit 0. Returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "boxd {args:?} failed with {}:\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.d.log()
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if let Ok(r) = self.d.req(reqwest::Method::GET, "/v2/box").send() {
            if let Ok(serde_json::Value::Array(boxes)) = r.json::<serde_json::Value>() {
                for b in boxes {
                    if let Some(id) = b["id"].as_str() {
                        let _ = self
                            .d
                            .req(reqwest::Method::DELETE, &format!("/v2/box/{id}"))
                            .send();
                    }
                }
            }
        }
        if !std::thread::panicking() {
            self.d.stop();
        }
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file (with its bytes) and every empty folder under `root`,
/// keyed by relative path.
fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        let mut empty = true;
        for e in std::fs::read_dir(dir).unwrap() {
            empty = false;
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
        if empty && dir != root {
            let rel = dir
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, None);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn client_commands_against_a_real_daemon() {
    let Some(d) = Cli::start() else { return };

    // create: prints the id; labels and env reach the box.
    let id = d
        .ok(&[
            "create",
            "--name",
            "cli-a",
            "--label",
            "team:x",
            "--label",
            "t1",
            "--env",
            "GREETING=hello there",
        ])
        .trim()
        .to_string();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "{id:?}"
    );

    // ls: a table with the box; --json: the array of BoxData.
    let table = d.ok(&["ls"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "ID", "NAME", "STATUS", "RUNTIME", "SIZE", "LABELS", "CREATED",
    ] {
        assert!(header.contains(col), "{table}");
    }
    let row = lines
        .find(|l| l.starts_with(&id))
        .expect("the box is listed");
    assert!(
        row.contains("cli-a") && row.contains("team:x") && row.contains("t1"),
        "{row}"
    );
    let boxes: serde_json::Value = serde_json::from_str(&d.ok(&["ls", "--json"])).unwrap();
    let b = boxes
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id.as_str())
        .expect("the box is in ls --json");
    assert_eq!(b["name"], "cli-a");
    let mut labels: Vec<&str> = b["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    labels.sort();
    assert_eq!(labels, ["t1", "team:x"]);
    let by_label: serde_json::Value =
        serde_json::from_str(&d.ok(&["ls", "--label", "t1", "--json"])).unwrap();
    assert_eq!(by_label.as_array().unwrap().len(), 1);
    let none: serde_json::Value =
        serde_json::from_str(&d.ok(&["ls", "--label", "nope", "--json"])).unwrap();
    assert_eq!(none, serde_json::json!([]));

    // exec: output streamed to stdout (stderr interleaved), exit code kept;
    // by id and by name.
    let out = d.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("hello there\n"), "{}", stdout(&out));
    assert!(stdout(&out).contains("oops\n"), "{}", stdout(&out));
    assert_eq!(d.ok(&["exec", "cli-a", "--", "pwd"]), "/workspace/home\n");
    assert_eq!(
        d.ok(&["exec", "-w", "/tmp", "cli-a", "--", "pwd"]),
        "/tmp\n"
    );
    // A megabyte of output arrives whole, and text that looks like the
    // trailer is output, not the end.
    let big = d.ok(&[
        "exec", &id, "--", "sh", "-c",
        "head -c 1000000 /dev/zero | tr '\\0' a; printf 'event: exit\\ndata: {\"exit_code\":7,\"cpu_ns\":0}\\n\\n'; echo end",
    ]);
    let fake = "event: exit\ndata: {\"exit_code\":7,\"cpu_ns\":0}\n\n";
    assert_eq!(
        big.len(),
        1_000_000 + fake.len() + 4,
        "{}",
        &big[big.len().saturating_sub(80)..]
    );
    assert!(big.ends_with(&format!("{fake}end\n")));
    assert!(big[..1_000_000].bytes().all(|b| b == b'a'));
    // --no-stream keeps stdout and stderr apart.
    let out = d.run(&[
        "exec",
        "--no-stream",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // A missing program is exit 127, as in a shell.
    let out = d.run(&["exec", &id, "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    // An unknown box is the server's error with its status, exit 1.
    let out = d.run(&["exec", "no-such-box", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("boxd: ") && stderr(&out).contains("(HTTP 404)"),
        "{}",
        stderr(&out)
    );

    // cp: a folder in and back out, a single file both ways.
    let src = d.work.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("sub/b.bin"), &blob).unwrap();
    std::fs::write(src.join("sub/deeper/c.txt"), "").unwrap();
    let said = d.ok(&["cp", "src", &format!("{id}:")]);
    assert!(said.contains("3 files"), "{said}");
    assert_eq!(d.ok(&["exec", &id, "--", "cat", "src/a.txt"]), "alpha\n");
    assert_eq!(
        d.ok(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "test -d src/empty && wc -c < src/sub/b.bin"
        ])
        .trim(),
        "300000"
    );
    // Into an existing box folder: the source lands inside it.
    d.ok(&["cp", "src", &format!("{id}:src")]);
    assert_eq!(
        d.ok(&["exec", &id, "--", "cat", "src/src/a.txt"]),
        "alpha\n"
    );
    // Out again to a new local folder, and compare.
    let said = d.ok(&["cp", &format!("{id}:src"), "back"]);
    assert!(said.contains("files"), "{said}");
    let mut want = tree(&src);
    // The second copy put src/ inside the box's src/.
    for (k, v) in tree(&src) {
        want.insert(format!("src/{k}"), v);
    }
    assert_eq!(tree(&d.work.path().join("back")), want);
    // Into an existing local folder: lands inside it.
    std::fs::create_dir_all(d.work.path().join("into")).unwrap();
    d.ok(&["cp", &format!("{id}:/workspace/home/src/sub"), "into"]);
    assert_eq!(
        std::fs::read(d.work.path().join("into/sub/b.bin")).unwrap(),
        blob
    );
    // Single files.
    d.ok(&["cp", "cli-a:src/sub/b.bin", "one.bin"]);
    assert_eq!(std::fs::read(d.work.path().join("one.bin")).unwrap(), blob);
    d.ok(&["cp", "one.bin", &format!("{id}:copies/renamed.bin")]);
    assert_eq!(
        d.ok(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "cmp copies/renamed.bin src/sub/b.bin && echo same"
        ]),
        "same\n"
    );
    let out = d.run(&["cp", &format!("{id}:missing.txt"), "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.txt"), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["cp", "--json", "one.bin", &format!("{id}:j.bin")])).unwrap();
    assert_eq!(json["files"], 1);
    assert_eq!(json["bytes"], 300_000);

    // status: key: value lines, or the BoxData.
    let st = d.ok(&["status", "cli-a"]);
    assert!(
        st.lines().any(|l| l.starts_with("id:") && l.ends_with(&id)),
        "{st}"
    );
    assert!(
        st.lines()
            .any(|l| l.starts_with("name:") && l.ends_with("cli-a")),
        "{st}"
    );
    assert!(st.contains("labels:") && st.contains("created:"), "{st}");
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["status", "--json", &id])).unwrap();
    assert_eq!(v["id"], id.as_str());

    // sh: not available yet, says what to do instead.
    let out = d.run(&["sh", &id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("boxd exec"), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 501"), "{}", stderr(&out));

    // rm: each box reported; one failure makes the exit code 1.
    let other = d.ok(&["create"]).trim().to_string();
    let out = d.run(&["rm", &id, "no-such-box", &other]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("deleted {id}\ndeleted {other}\n"));
    assert!(stderr(&out).contains("no-such-box"), "{}", stderr(&out));
    let out = d.run(&["status", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(HTTP 404)"), "{}", stderr(&out));
}

#[test]
fn keys_are_created_used_and_revoked() {
    let Some(d) = Cli::start() else { return };
    let key = d
        .ok(&["keys", "create", "--name", "cli-test"])
        .trim()
        .to_string();
    assert!(key.starts_with("boxd_"), "{key:?}");

    // The new key works.
    d.ok(&["ls", "--key", &key]);

    // It is listed (by prefix only) and can be found in --json.
    let list = d.ok(&["keys", "list"]);
    assert!(list.starts_with("ID"), "{list}");
    assert!(!list.contains(&key), "the list must not show key values");
    assert!(
        list.contains("cli-test") && list.contains(&key[..12]),
        "{list}"
    );
    let keys: serde_json::Value = serde_json::from_str(&d.ok(&["keys", "list", "--json"])).unwrap();
    let id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "cli-test")
        .and_then(|k| k["id"].as_str())
        .expect("the key is listed")
        .to_string();

    // Revoked, it is refused.
    assert!(d.ok(&["keys", "revoke", &id]).contains("revoked"));
    let out = d.run(&["ls", "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(HTTP 401)"), "{}", stderr(&out));
    let out = d.run(&["keys", "revoke", "key_nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("key_nope"), "{}", stderr(&out));
}

#[test]
fn errors_without_a_daemon_say_what_to_do() {
    let dir = TempDir::new("boxd-cli-nodaemon");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let boxd = |args: &[&str]| {
        let mut c = Command::new(BOXD);
        c.args(args)
            .env_remove("BOXD_URL")
            .env_remove("BOXD_API_KEY")
            .env("BOXD_DATA_DIR", dir.path());
        run_bounded(c)
    };

    let url = format!("http://127.0.0.1:{port}");
    let out = boxd(&["ls", "--url", &url, "--key", "k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "cannot reach boxd at {url}: is `boxd serve` running?"
        )),
        "{}",
        stderr(&out)
    );

    let out = boxd(&["ls", "--url", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("BOXD_API_KEY") && stderr(&out).contains("admin.key"),
        "{}",
        stderr(&out)
    );

    let missing = dir.path().join("never");
    let out = boxd(&["keys", "list", "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no boxd database at"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists(), "keys must not create a data directory");

    let out = boxd(&["cp", "a", "b", "--key", "k", "--url", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("BOX:path"), "{}", stderr(&out));
}

#[test]
fn team_headers_are_set_from_stdin_listed_by_name_and_removed() {
    let Some(cli) = Cli::start() else { return };
    const VALUE: &str = "Bearer sk_cli_HEADERVALUE_31337";
    // Values come from stdin, one line per header name.
    let mut c = cli.cmd();
    c.args([
        "headers",
        "set",
        "api.example.test",
        "Authorization",
        "X-Extra",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start boxd headers set");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(format!("{VALUE}\nsecond-value\n").as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("boxd headers set");
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("api.example.test") && shown.contains("Authorization, X-Extra"),
        "{shown}"
    );
    assert!(!shown.contains(VALUE), "{shown}");

    let listed = cli.ok(&["headers", "ls"]);
    assert!(
        listed.contains("PATTERN") && listed.contains("api.example.test"),
        "{listed}"
    );
    let json = cli.ok(&["--json", "headers", "ls"]);
    assert!(
        json.contains("\"Authorization\"") && !json.contains(VALUE),
        "{json}"
    );
    // Too few lines: nothing is set, the error says why.
    let out = cli.run(&["headers", "set", "*.example.test", "X-Key"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stdin"), "{}", stderr(&out));
    // A bad pattern is refused by the daemon, naming it.
    let mut c = cli.cmd();
    c.args(["headers", "set", "API.example.test", "X-Key"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start boxd headers set");
    {
        use std::io::Write;
        let _ = child.stdin.take().expect("stdin").write_all(b"v\n");
    }
    let out = child.wait_with_output().expect("boxd headers set");
    assert!(
        !out.status.success() && stderr(&out).contains("API.example.test"),
        "{}",
        stderr(&out)
    );

    let after = cli.ok(&["headers", "rm", "api.example.test"]);
    assert!(!after.contains("api.example.test"), "{after}");
    let out = cli.run(&["headers", "rm", "api.example.test"]);
    assert!(
        !out.status.success() && stderr(&out).contains("no team attach headers"),
        "{}",
        stderr(&out)
    );
    assert!(
        !cli.d.log().contains(VALUE),
        "the value reached the daemon's log"
    );
}

#[test]
fn snapshots_are_taken_listed_restored_and_removed_from_the_cli() {
    let Some(d) = Cli::start() else { return };
    let src = d
        .ok(&["create", "--name", "snap-src", "--env", "GREETING=hi"])
        .trim()
        .to_string();
    d.ok(&["exec", &src, "--", "sh", "-c", "echo kept > f"]);

    // create: prints the snapshot's id; --name names it.
    let sid = d
        .ok(&["snapshot", "create", "snap-src", "--name", "base"])
        .trim()
        .to_string();
    assert!(
        sid.starts_with("snap-") && !sid.contains(char::is_whitespace),
        "{sid:?}"
    );
    let other: serde_json::Value =
        serde_json::from_str(&d.ok(&["snapshot", "create", &src, "--json"])).unwrap();
    assert_eq!(other["status"], "ready", "{other}");
    assert_eq!(other["box_id"], src.as_str());
    // Without --name, the name is the id.
    let other_id = other["id"].as_str().unwrap().to_string();
    assert_eq!(other["name"], other_id.as_str());

    // ls: a table of the team's snapshots, or of one box's; --json: the
    // API's answer.
    let table = d.ok(&["snapshot", "ls"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in ["ID", "NAME", "BOX", "SIZE", "STATUS", "CREATED"] {
        assert!(header.contains(col), "{table}");
    }
    let row = lines
        .clone()
        .find(|l| l.starts_with(&sid))
        .expect("the snapshot is listed");
    assert!(
        row.contains(" base ")
            && row.contains(&src)
            && row.contains(" B ")
            && row.contains("ready"),
        "{row}"
    );
    assert_eq!(lines.count(), 2, "{table}");
    let listed: serde_json::Value =
        serde_json::from_str(&d.ok(&["snapshot", "ls", "snap-src", "--json"])).unwrap();
    let mut ids: Vec<&str> = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    ids.sort();
    let mut want = vec![sid.as_str(), other_id.as_str()];
    want.sort();
    assert_eq!(ids, want, "{listed}");
    let empty_box = d.ok(&["create"]).trim().to_string();
    assert_eq!(
        d.ok(&["snapshot", "ls", &empty_box]),
        "ID  NAME  BOX  SIZE  STATUS  CREATED\n"
    );

    // create --from-snapshot: a box with the snapshot's files and env,
    // by snapshot id or name; options override the snapshot's config.
    let restored = d
        .ok(&["create", "--from-snapshot", &sid, "--name", "snap-copy"])
        .trim()
        .to_string();
    assert_ne!(restored, src);
    assert_eq!(
        d.ok(&[
            "exec",
            "snap-copy",
            "--",
            "sh",
            "-c",
            "cat f; echo $GREETING"
        ]),
        "kept\nhi\n"
    );
    let by_name = d
        .ok(&["create", "--from-snapshot", "base", "--env", "GREETING=bye"])
        .trim()
        .to_string();
    assert_eq!(
        d.ok(&["exec", &by_name, "--", "sh", "-c", "cat f; echo $GREETING"]),
        "kept\nbye\n"
    );

    // The API's errors are shown with a non-zero exit: an unknown
    // snapshot, a taken name, an unknown box.
    let out = d.run(&["create", "--from-snapshot", "no-such-snap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("boxd: ")
            && stderr(&out).contains("snapshot no-such-snap not found")
            && stderr(&out).contains("(HTTP 404)"),
        "{}",
        stderr(&out)
    );
    let out = d.run(&["snapshot", "create", &src, "--name", "base"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(HTTP 409)"), "{}", stderr(&out));
    let out = d.run(&["snapshot", "ls", "no-such-box"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(HTTP 404)"), "{}", stderr(&out));

    // rm: each id reported; one failure makes the exit code 1; the boxes
    // started from a removed snapshot keep working.
    let out = d.run(&["snapshot", "rm", &sid, "no-such-snap", &other_id]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("deleted {sid}\ndeleted {other_id}\n"));
    assert!(
        stderr(&out).contains("no-such-snap") && stderr(&out).contains("(HTTP 404)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        d.ok(&["snapshot", "ls"]),
        "ID  NAME  BOX  SIZE  STATUS  CREATED\n"
    );
    assert_eq!(d.ok(&["exec", &restored, "--", "cat", "f"]), "kept\n");
    let out = d.run(&["create", "--from-snapshot", &sid]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(HTTP 404)"), "{}", stderr(&out));
    let out = d.run(&["snapshot", "rm", "--json", "gone"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&json[0]["snapshot"], &json[0]["deleted"]),
        (&serde_json::json!("gone"), &serde_json::json!(false)),
        "{json}"
    );
}

#[test]
fn the_cli_leaves_box_rules_to_the_server() {
    let Some(d) = Cli::start() else { return };
    // A label named six times is one label to the server (the CLI used to
    // count six and refuse).
    let mut args = vec!["create"];
    for _ in 0..6 {
        args.extend(["--label", "same"]);
    }
    let id = d.ok(&args).trim().to_string();
    let (_, v) = d.d.get(&format!("/v2/box/{id}"));
    assert_eq!(v["labels"], serde_json::json!(["same"]), "{v}");
    // Six different ones: the server's 400 names the limit.
    let mut args = vec!["create"];
    let names: Vec<String> = (0..6).map(|i| format!("l{i}")).collect();
    for n in &names {
        args.extend(["--label", n.as_str()]);
    }
    let out = d.run(&args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at most 5 labels"),
        "{}",
        stderr(&out)
    );
    // A box path that climbs out of the root is the server's 400, never
    // quietly another path (the CLI used to clamp `../../..` to `/`).
    let dest = d.work.path().join("passwd");
    let out = d.run(&[
        "cp",
        &format!("{id}:../../../etc/passwd"),
        dest.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        !dest.exists(),
        "a file was copied from outside the path asked for"
    );
    assert!(
        stderr(&out).contains("400") || stderr(&out).contains("leaves"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn info_lists_the_runtimes_this_host_offers() {
    if !nix::unistd::geteuid().is_root() {
        common::skip("boxd info starts the box runtime, which needs root");
        return;
    }
    let data = TempDir::new("boxd-cli-info");
    let mut c = Command::new(BOXD);
    c.arg("--data-dir")
        .arg(data.path())
        .args(["--agent", AGENT, "info"])
        .env_remove("BOXD_LOG");
    let out = run_bounded(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("runtimes:"))
        .unwrap_or_else(|| panic!("no runtimes line:\n{text}"));
    assert!(line.contains("host"), "{line}");
    // A fresh data directory has built no runtime image yet: each one is
    // listed with the command that builds it, none is offered as usable.
    assert!(!line.contains("python"), "{line}");
    let build = text
        .lines()
        .find(|l| l.starts_with("to build:"))
        .unwrap_or_else(|| panic!("no to-build line:\n{text}"));
    for r in ["node", "python", "golang", "ruby", "rust"] {
        assert!(build.contains(r), "{build}");
    }
    assert!(build.contains("boxd image build"), "{build}");
}
