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
