//! Processes in a box: real-time streaming, stdin, signals, exit codes,
//! timeouts, environment and users.

mod common;
use boxd_agent::protocol::SpawnRequest;
use boxd_agent::Output;
use boxd_runtime::BoxSpec;
use common::*;
use std::time::Duration;
use tokio::time::timeout;

/// Bounds every wait so a broken stream fails the test instead of hanging.
const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn output_streams_while_the_process_is_still_running() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    // The process prints, then blocks until we answer on stdin: if output
    // were buffered until exit, the first line could never arrive.
    let mut p = b
        .spawn(SpawnRequest::shell(
            "echo first; read answer; echo \"got $answer\"; echo oops >&2; exit 3",
        ))
        .await
        .unwrap();
    let first = timeout(LIMIT, p.next())
        .await
        .expect("first line never arrived")
        .unwrap();
    assert_eq!(first, Some(Output::Stdout(b"first\n".to_vec())));
    p.write_stdin(b"42\n").await.unwrap();
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    while let Some(o) = timeout(LIMIT, p.next())
        .await
        .expect("stream stalled")
        .unwrap()
    {
        match o {
            Output::Stdout(d) => out.extend(d),
            Output::Stderr(d) => err.extend(d),
            Output::Exit(s) => code = Some(s.code),
        }
    }
    assert_eq!(String::from_utf8_lossy(&out), "got 42\n");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");
    assert_eq!(code, Some(3));
}

#[tokio::test]
async fn a_line_every_100ms_arrives_line_by_line() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let mut p = b
        .spawn(SpawnRequest::shell(
            "for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done",
        ))
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(o) = timeout(LIMIT, p.next()).await.expect("stalled").unwrap() {
        if let Output::Stdout(d) = o {
            chunks.push(String::from_utf8_lossy(&d).into_owned());
        }
    }
    // Each line was delivered as it was produced, not batched at exit.
    assert_eq!(
        chunks,
        ["line1\n", "line2\n", "line3\n", "line4\n", "line5\n"]
    );
}

#[tokio::test]
async fn signals_kill_and_process_list() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let mut p = b
        .spawn(SpawnRequest::shell(
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ))
        .await
        .unwrap();
    assert_eq!(
        timeout(LIMIT, p.next()).await.unwrap().unwrap(),
        Some(Output::Stdout(b"ready\n".to_vec()))
    );
    let list = b.agent().processes().await.unwrap();
    assert!(
        list.iter()
            .any(|x| x.pid == p.pid && x.command.contains("trap")),
        "{list:?}"
    );
    assert!(list
        .iter()
        .any(|x| x.pid == 1 && x.command.contains("boxd-agent")));
    b.agent().signal(p.pid, libc::SIGTERM).await.unwrap();
    let done = timeout(LIMIT, p.collect()).await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout), "got-term\n");
    assert_eq!(done.status.code, 7);
    // Refused: signalling PID 1, bad signal numbers.
    assert!(b.agent().signal(1, libc::SIGKILL).await.is_err());
    assert!(b.agent().signal(2, 999).await.is_err());
}

#[tokio::test]
async fn background_process_stdin_through_the_stdin_operation() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let p = b.spawn(SpawnRequest::argv(["cat"])).await.unwrap();
    b.agent()
        .write_stdin(p.pid, b"via-op\n", true)
        .await
        .unwrap();
    let done = timeout(LIMIT, p.collect()).await.unwrap().unwrap();
    assert_eq!(done.stdout, b"via-op\n");
    assert_eq!(done.status.code, 0);
}

#[tokio::test]
async fn timeouts_kill_the_whole_process_group() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let mut req = SpawnRequest::shell("sleep 1000 & sleep 1000; echo never");
    req.timeout_ms = Some(200);
    let done = timeout(LIMIT, b.exec(req)).await.unwrap().unwrap();
    assert!(done.status.timed_out);
    assert_eq!(done.status.signal, Some(9));
    let ps = b.ok("ps -eo args").await;
    assert!(!ps.contains("sleep 1000"), "{ps}");
}

#[tokio::test]
async fn a_dropped_stream_kills_its_process() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let p = b
        .spawn(SpawnRequest::argv(["sleep", "4321"]))
        .await
        .unwrap();
    drop(p);
    let mut gone = false;
    for _ in 0..200 {
        if !b.ok("ps -eo args").await.contains("sleep 4321") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the process outlived its client");
}

#[tokio::test]
async fn exit_codes_missing_commands_and_bad_cwd() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    assert_eq!(b.sh("exit 42").await.status.code, 42);
    let nf = b
        .exec(SpawnRequest::argv(["no-such-binary-xyz"]))
        .await
        .unwrap();
    assert_eq!(nf.status.code, 127);
    assert!(String::from_utf8_lossy(&nf.stderr).contains("no-such-binary-xyz"));
    let mut req = SpawnRequest::shell("pwd");
    req.cwd = Some("/does/not/exist".into());
    let err = b.exec(req).await.expect_err("bad cwd");
    assert!(err.to_string().contains("/does/not/exist"), "{err}");
    let mut req = SpawnRequest::shell("pwd");
    req.user = Some("ghost".into());
    assert!(b
        .exec(req)
        .await
        .err()
        .unwrap()
        .to_string()
        .contains("ghost"));
}

#[tokio::test]
async fn environment_defaults_box_env_and_per_process_env() {
    let Some(rt) = runtime() else { return };
    let mut spec = BoxSpec::new(unique("env"));
    spec.env.insert("GREETING".into(), "hello".into());
    spec.env.insert("SHARED".into(), "from-box".into());
    let b = TestBox::new(&rt, spec);
    let mut req = SpawnRequest::shell("echo $GREETING $SHARED $PATH $HOME $LANG $TERM; pwd");
    req.env.insert("SHARED".into(), "from-exec".into());
    let out = String::from_utf8(b.exec(req).await.unwrap().stdout).unwrap();
    assert_eq!(
        out,
        "hello from-exec /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /root C.UTF-8 xterm\n/workspace/home\n"
    );
    let mut req = SpawnRequest::shell("echo $HOME $USER; id -un");
    req.user = Some("box".into());
    let out = String::from_utf8(b.exec(req).await.unwrap().stdout).unwrap();
    assert_eq!(out, "/workspace/home box\nbox\n");
    // The host's environment never leaks in.
    std::env::set_var("BOXD_HOST_ONLY", "leak");
    assert!(!b.ok("env").await.contains("BOXD_HOST_ONLY"));
}

/// The Upstash images' user: `boxuser`, home `/home/boxuser` (harnesses
/// live there; tests `cd` into it), beside `box` and `/workspace/home`.
/// The same uid as `box`, so either name can write both homes.
#[tokio::test]
async fn boxuser_exists_with_a_writable_home_at_home_boxuser() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    assert_eq!(b.ok("id -u boxuser; id -g boxuser").await, "1000\n1000\n");
    // As root (the default user) and as boxuser itself.
    b.ok("cd /home/boxuser && touch by-root").await;
    let mut req =
        SpawnRequest::shell("cd /home/boxuser && touch x && echo $HOME $USER && stat -c %u x");
    req.user = Some("boxuser".into());
    let done = b.exec(req).await.unwrap();
    assert_eq!(
        (
            done.status.code,
            String::from_utf8_lossy(&done.stdout).as_ref()
        ),
        (0, "/home/boxuser boxuser\n1000\n"),
        "stderr: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    // The default working directory is still `/workspace/home`, writable
    // by boxuser too.
    let mut req = SpawnRequest::shell("pwd && touch mine");
    req.user = Some("boxuser".into());
    let done = b.exec(req).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout), "/workspace/home\n");
    assert_eq!(done.status.code, 0);
}

#[tokio::test]
async fn zombies_are_reaped_by_pid_1() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    // Orphans (double fork) are reparented to the agent, which reaps them.
    b.ok("for i in 1 2 3 4 5; do (sh -c 'exit 0' zz-orphan &) ; done")
        .await;
    // Wait (bounded) until none of them still runs: each is then reaped
    // (gone) or a zombie. (`[a]` keeps the pattern from matching itself.)
    let mut live = String::new();
    for _ in 0..500 {
        live = b
            .ok("ps -eo stat,args | awk '$1 !~ /^Z/ && /zz-orph[a]n/'")
            .await;
        if live.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live.trim(), "", "the orphans never exited");
    let mut zombies = String::new();
    for _ in 0..500 {
        zombies = b.ok("ps -eo stat,pid,args | awk '$1 ~ /^Z/'").await;
        if zombies.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(zombies.trim(), "", "zombies left in the box");
}

/// A burst writer in the box: each burst is one stdout and one stderr write
/// back to back (stdout first on even bursts, stderr first on odd ones, so
/// neither a random nor a fixed preference between the pipes passes), and
/// the next burst starts only once the agent has read both pipes empty.
const BURSTS: &str = r#"
import fcntl, os, struct, sys, termios, time
def unread(fd):
    return struct.unpack('i', fcntl.ioctl(fd, termios.FIONREAD, b'\0\0\0\0'))[0]
for i in range(200):
    first, second = (1, 2) if i % 2 == 0 else (2, 1)
    os.write(first, b'%d\n' % (2 * i))
    os.write(second, b'%d\n' % (2 * i + 1))
    deadline = time.monotonic() + 10
    while unread(1) or unread(2):
        if time.monotonic() > deadline:
            sys.exit(99)
        time.sleep(0.0002)
"#;

#[tokio::test]
async fn stdout_and_stderr_bursts_arrive_in_the_order_written() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let mut p = b
        .spawn(SpawnRequest::argv(["python3", "-c", BURSTS]))
        .await
        .unwrap();
    // Every line as it arrived, tagged with the stream it came on.
    let mut got: Vec<(&str, u32)> = Vec::new();
    let mut code = None;
    while let Some(o) = timeout(LIMIT, p.next()).await.expect("stalled").unwrap() {
        let (stream, data) = match o {
            Output::Stdout(d) => ("out", d),
            Output::Stderr(d) => ("err", d),
            Output::Exit(s) => {
                code = Some(s.code);
                continue;
            }
        };
        for line in String::from_utf8_lossy(&data).lines() {
            got.push((stream, line.parse().expect("a number per line")));
        }
    }
    assert_eq!(code, Some(0), "the writer gave up waiting for the agent");
    let want: Vec<(&str, u32)> = (0..400)
        .map(|n| {
            let burst = n / 2;
            let on_stdout = (burst % 2 == 0) == (n % 2 == 0);
            (if on_stdout { "out" } else { "err" }, n)
        })
        .collect();
    let first_wrong = got.iter().zip(&want).position(|(g, w)| g != w);
    assert_eq!(
        (got.len(), first_wrong),
        (want.len(), None),
        "out of order; got {:?}",
        &got[first_wrong.unwrap_or(0).saturating_sub(2)..]
            .iter()
            .take(8)
            .collect::<Vec<_>>()
    );
}

/// Starts two detached descendants — a `setsid` child (its own session
/// and group) and a double-forked `nohup` one (orphaned at once) — waits
/// until both run, says `ready`, then sleeps. The sleeps are `sleep 400N`
/// (written as arithmetic, so no command line but theirs shows them).
const DETACHED: &str = "a=$((4000+1)); b=$((4000+2)); setsid sleep $a & \
     (nohup sh -c \"sleep $b\" >/dev/null 2>&1 &); \
     until ps -eo args | grep -q \"slee[p] $a\" && ps -eo args | grep -q \"slee[p] $b\"; \
     do sleep 0.01; done; echo ready; sleep $((4000))";

/// The `sleep 400N` processes still in the box (zombies aside).
async fn sleepers(b: &TestBox) -> Vec<String> {
    b.ok("ps -eo stat=,args= | awk '$1 !~ /^Z/'")
        .await
        .lines()
        .filter(|l| l.contains("sleep 400"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Waits (bounded) until `gone` is true of the box's process list.
async fn until_gone(b: &TestBox, what: &str) -> String {
    let mut ps = String::new();
    for _ in 0..500 {
        ps = b.ok("ps -eo stat=,args= | awk '$1 !~ /^Z/'").await;
        if !ps.contains(what) {
            return String::new();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ps
}

#[tokio::test]
async fn a_timed_out_exec_ends_every_descendant_however_detached() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let mut req = SpawnRequest::shell(DETACHED);
    req.timeout_ms = Some(3000);
    let done = timeout(LIMIT, b.exec(req)).await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "ready\n",
        "the detached children never ran: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(done.status.timed_out);
    assert_eq!(done.status.signal, Some(9));
    // Nothing of it is left once the exit is reported.
    assert_eq!(sleepers(&b).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_dropped_stream_ends_every_descendant_however_detached() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let mut p = b.spawn(SpawnRequest::shell(DETACHED)).await.unwrap();
    assert_eq!(
        timeout(LIMIT, p.next()).await.unwrap().unwrap(),
        Some(Output::Stdout(b"ready\n".to_vec()))
    );
    let running = sleepers(&b).await;
    assert!(
        running.iter().any(|l| l.ends_with("sleep 4001"))
            && running.iter().any(|l| l.ends_with("sleep 4002")),
        "{running:?}"
    );
    drop(p);
    let left = until_gone(&b, "sleep 400").await;
    assert_eq!(left, "", "processes outlived their client");
}

#[tokio::test]
async fn background_processes_of_a_finished_exec_are_kept_listed_and_killable() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let mut req = SpawnRequest::shell("sleep 4100 & echo started");
    req.exec_id = Some("exec-bg".into());
    req.started_by = Some("key-1".into());
    let done = timeout(LIMIT, b.exec(req)).await.unwrap().unwrap();
    assert_eq!(done.status.code, 0);
    // The exit says what it left running.
    let left: Vec<_> = done
        .status
        .left_running
        .iter()
        .filter(|p| p.command == "sleep 4100")
        .collect();
    assert_eq!(left.len(), 1, "{:?}", done.status.left_running);
    let pid = left[0].pid;
    // Kept, and listed with the exec it came from.
    assert!(b.ok("ps -eo args").await.contains("sleep 4100"));
    let list = b.agent().processes().await.unwrap();
    let p = list.iter().find(|p| p.pid == pid).expect("listed");
    let exec = p.exec.as_ref().expect("tied to its exec");
    assert_eq!(exec.exec_id.as_deref(), Some("exec-bg"));
    assert_eq!(exec.started_by.as_deref(), Some("key-1"));
    assert!(!p.internal);
    // boxd's own processes cannot be killed through it.
    let tracker = list
        .iter()
        .find(|t| t.internal && t.pid != 1)
        .expect("the exec's tracker");
    for own in [1, tracker.pid] {
        let e = b.agent().kill_process(own, 9).await.expect_err("refused");
        assert_eq!(
            e.agent_error().map(|b| b.kind),
            Some(boxd_agent::protocol::ErrorKind::PermissionDenied),
            "{e}"
        );
    }
    let killed = b.agent().kill_process(pid, libc::SIGTERM).await.unwrap();
    assert_eq!(killed.command, "sleep 4100");
    assert_eq!(until_gone(&b, "sleep 4100").await, "", "not killed");
    let e = b.agent().kill_process(pid, 9).await.expect_err("gone");
    assert_eq!(
        e.agent_error().map(|b| b.kind),
        Some(boxd_agent::protocol::ErrorKind::NotFound)
    );
}

#[tokio::test]
async fn killing_its_own_tracker_does_not_leave_an_exec_s_processes_untracked() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    // Box root can SIGKILL the tracker (the command's parent): what the
    // command started is then ended, never left running untracked.
    let script = "a=$((4200+1)); setsid sleep $a & \
                  until ps -eo args | grep -q \"slee[p] $a\"; do sleep 0.01; done; \
                  kill -9 $PPID; sleep $((4200))";
    let done = timeout(LIMIT, b.exec(SpawnRequest::shell(script)))
        .await
        .expect("the command outlived its tracker")
        .unwrap();
    assert_eq!(done.status.signal, Some(9));
    assert_eq!(until_gone(&b, "sleep 420").await, "", "left untracked");
}

/// Over HTTP: the same through `exec` (with a timeout) and `exec-stream`
/// (cancelled by the client), and the background processes of a finished
/// exec through `GET /v2/box/{id}/processes` and `.../kill`, audited.
#[test]
fn http_execs_end_their_descendants_and_background_processes_are_listed_and_killable() {
    use common::daemon::TestDaemon;
    use reqwest::Method;
    use serde_json::json;
    use std::io::Read;
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({"name": "procs"}));
    let sleeping = |d: &TestDaemon| -> Vec<String> {
        let (s, v) = d.get(&format!("/v2/box/{id}/processes"));
        assert_eq!(s, 200, "{v}");
        v["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .filter(|p| p["state"] != "Z")
            .map(|p| p["command"].as_str().unwrap_or_default().to_string())
            .filter(|c| c.contains("sleep 400"))
            .collect()
    };

    // A timed-out exec.
    let (s, v) = d.post(
        &format!("/v2/box/{id}/exec"),
        json!({"command": ["sh", "-c", DETACHED], "timeout": 3000}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["output"], "ready\n", "{v}");
    assert_eq!(sleeping(&d), Vec::<String>::new());

    // An exec-stream the client drops after `ready`.
    let mut resp = d
        .req(Method::POST, &format!("/v2/box/{id}/exec-stream"))
        .json(&json!({"command": ["sh", "-c", DETACHED]}))
        .send()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("ready\n") {
        let n = resp.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(sleeping(&d).len() >= 3, "{:?}", sleeping(&d));
    drop(resp);
    let mut left = sleeping(&d);
    for _ in 0..500 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = sleeping(&d);
    }
    assert_eq!(left, Vec::<String>::new(), "outlived the cancelled stream");
    let (_, audit) = d.get(&format!("/v2/audit?box={id}&kind=exec&limit=1000"));
    assert!(
        audit["events"].as_array().is_some_and(|events| events
            .iter()
            .any(|e| e["data"]["kind"] == "exec_stream" && e["data"]["cancelled"] == true)),
        "the cancelled stream is audited: {audit}"
    );

    // A finished exec's background process: kept, listed, killable.
    let (s, v) = d.post(
        &format!("/v2/box/{id}/exec"),
        json!({"command": ["sh", "-c", "sleep 4300 & echo started"]}),
    );
    assert_eq!((s, v["exit_code"].as_i64()), (200, Some(0)), "{v}");
    let exec_id = v["exec_id"].as_str().expect("exec_id").to_string();
    let (_, list) = d.get(&format!("/v2/box/{id}/processes"));
    let bg = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["command"] == "sleep 4300")
        .unwrap_or_else(|| panic!("not listed: {list}"))
        .clone();
    assert_eq!(bg["exec_id"], exec_id.as_str(), "{bg}");
    assert!(bg["started_by"].is_string(), "{bg}");
    assert!(
        list["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pid"] != 1),
        "boxd's own processes are not listed: {list}"
    );
    let pid = bg["pid"].as_i64().unwrap();
    // The completion audit event lists it.
    let (_, audit) = d.get(&format!("/v2/audit?box={id}&kind=exec&limit=1000"));
    let event = audit["events"]
        .as_array()
        .and_then(|events| {
            events
                .iter()
                .find(|e| e["data"]["exec_id"] == exec_id.as_str())
        })
        .unwrap_or_else(|| panic!("no exec event of {exec_id}: {audit}"));
    assert_eq!(event["data"]["left_running"][0]["pid"], pid, "{event}");
    // Bad input and boxd's own pid are refused.
    let (s, _) = d.post(&format!("/v2/box/{id}/processes/1/kill"), json!({}));
    assert_eq!(s, 403);
    let (s, v) = d.post(
        &format!("/v2/box/{id}/processes/{pid}/kill?signal=NOPE"),
        json!({}),
    );
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.post(&format!("/v2/box/{id}/processes/abc/kill"), json!({}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.post(
        &format!("/v2/box/{id}/processes/{pid}/kill?signal=TERM"),
        json!({}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["signal"].as_i64(), v["process"]["exec_id"].as_str()),
        (Some(15), Some(exec_id.as_str())),
        "{v}"
    );
    let mut gone = false;
    for _ in 0..500 {
        let (_, list) = d.get(&format!("/v2/box/{id}/processes"));
        if !list.to_string().contains("sleep 4300") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "not killed");
    let (s, _) = d.post(&format!("/v2/box/{id}/processes/{pid}/kill"), json!({}));
    assert_eq!(s, 404);
    let (_, audit) = d.get(&format!("/v2/audit?box={id}&kind=process.kill"));
    assert!(
        audit.to_string().contains(&exec_id),
        "the kill is audited with its exec: {audit}"
    );
}
