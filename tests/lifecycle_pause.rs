//! Pause and resume, auto-resume, CPU accounting, idle pause and
//! keep-alive, init commands and box lifetimes, through a real `boxd
//! serve` (and its restarts and `kill -9`s).

mod common;
use common::daemon::TestDaemon;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn status(d: &TestDaemon, id: &str) -> (String, u64) {
    let (code, v) = d.get(&format!("/v2/box/{id}/status"));
    assert_eq!(code, 200, "status: {v}");
    (
        v["status"].as_str().unwrap_or_default().to_string(),
        v["total_cpu_ns"].as_u64().unwrap_or(0),
    )
}

/// Polls `f` every 100 ms until it is true; panics with `what` after `secs`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds since the epoch (the unit of `expires_at`).
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn events(d: &TestDaemon, id: &str, kind: &str) -> Vec<Value> {
    let (code, v) = d.get(&format!("/v2/audit?box={id}&kind={kind}"));
    assert_eq!(code, 200, "audit: {v}");
    v["events"].as_array().cloned().unwrap_or_default()
}

fn post_empty(d: &TestDaemon, path: &str) -> (u16, Value) {
    common::daemon::json_of(
        d.req(reqwest::Method::POST, path)
            .send()
            .expect("send a bodiless POST"),
    )
}

#[test]
fn a_paused_box_uses_no_cpu_and_any_call_resumes_it() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({}));
    d.sh(&id, "echo kept > /workspace/home/before.txt");
    d.sh(&id, "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &");
    // The busy loop burns CPU while the box runs.
    let (_, first) = status(&d, &id);
    wait_for(20, "the busy loop to use CPU", || status(&d, &id).1 > first);

    let (code, v) = post_empty(&d, &format!("/v2/box/{id}/pause"));
    assert_eq!(code, 200, "pause: {v}");
    assert_eq!(v["status"], "paused");
    let (state, frozen_at) = status(&d, &id);
    assert_eq!(state, "paused");
    assert!(frozen_at > 0, "CPU time is accounted");
    std::thread::sleep(Duration::from_secs(2));
    let (state, later) = status(&d, &id);
    assert_eq!(state, "paused");
    assert_eq!(later, frozen_at, "a paused box used CPU");
    // Pausing again changes nothing; get and list say paused.
    assert_eq!(post_empty(&d, &format!("/v2/box/{id}/pause")).0, 200);
    assert_eq!(d.get(&format!("/v2/box/{id}")).1["status"], "paused");
    let (_, list) = d.get("/v2/box");
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id.as_str());
    assert_eq!(listed.unwrap()["status"], "paused");

    // An exec resumes the box and answers as usual.
    let (code, out, _) = d.sh(&id, "cat /workspace/home/before.txt");
    assert_eq!((code, out.as_str()), (0, "kept\n"));
    assert_eq!(status(&d, &id).0, "idle");
    let resumed = events(&d, &id, "box.resume");
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0]["data"]["reason"], "auto");
    wait_for(20, "the busy loop to run again", || {
        status(&d, &id).1 > later
    });

    // A file call resumes too; resume of a running box changes nothing.
    assert_eq!(post_empty(&d, &format!("/v2/box/{id}/pause")).0, 200);
    let (code, v) = d.get(&format!(
        "/v2/box/{id}/files/read?path=/workspace/home/before.txt"
    ));
    assert_eq!(code, 200, "read: {v}");
    assert_eq!(status(&d, &id).0, "idle");
    let (code, v) = post_empty(&d, &format!("/v2/box/{id}/resume"));
    assert_eq!((code, v["status"].as_str()), (200, Some("idle")));
    assert_eq!(events(&d, &id, "box.pause").len(), 2);

    // /metrics has the boxes' CPU time.
    let text = d
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(text.contains("boxd_box_cpu_seconds"), "{text}");
    assert!(text.contains("boxd_box_lifecycle_total"), "{text}");

    // A paused box can be deleted.
    assert_eq!(post_empty(&d, &format!("/v2/box/{id}/pause")).0, 200);
    assert_eq!(d.delete(&format!("/v2/box/{id}")).0, 200);
    assert_eq!(d.get(&format!("/v2/box/{id}")).0, 404);
}

#[test]
fn a_hundred_pause_resume_cycles_lose_no_writes() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({}));
    d.sh(
        &id,
        "nohup sh -c 'i=0; while [ ! -e /workspace/home/stop ]; do i=$((i+1)); echo $i >> /workspace/home/counter; done' >/dev/null 2>&1 &",
    );
    for i in 0..100 {
        let (code, v) = post_empty(&d, &format!("/v2/box/{id}/pause"));
        assert_eq!(code, 200, "pause {i}: {v}");
        let (code, v) = post_empty(&d, &format!("/v2/box/{id}/resume"));
        assert_eq!(code, 200, "resume {i}: {v}");
    }
    d.sh(&id, "touch /workspace/home/stop; sleep 0.2");
    let (code, out, err) = d.sh(
        &id,
        "awk 'NR != $1 { print \"gap at line \" NR \": \" $0; exit 1 } END { print NR }' /workspace/home/counter",
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: u64 = out.trim().parse().unwrap();
    assert!(lines > 0, "the writer wrote nothing");
    assert_eq!(events(&d, &id, "box.pause").len(), 100);
}

#[test]
fn boxes_expire_and_expiry_survives_a_restart() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    // Refused lifetimes.
    assert_eq!(d.post("/v2/box", json!({"ttl": 0})).0, 400);
    assert_eq!(d.post("/v2/box", json!({"ttl": 259_201})).0, 400);
    // An ephemeral box gets the default lifetime and says when it ends.
    let (code, v) = d.post("/v2/box", json!({"ephemeral": true}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ephemeral"], true);
    let ends = v["expires_at"].as_i64().unwrap() - v["created_at"].as_i64().unwrap();
    assert!((259_199..=259_201).contains(&ends), "{v}");
    let keep = v["id"].as_str().unwrap().to_string();

    let (code, v) = d.post("/v2/box", json!({"ttl": 1}));
    assert_eq!(code, 200, "{v}");
    let short = v["id"].as_str().unwrap().to_string();
    let (code, v) = d.post("/v2/box", json!({"timeout": 1500}));
    assert_eq!(code, 200, "{v}");
    let by_timeout = v["id"].as_str().unwrap().to_string();
    wait_for(30, "the ttl box to expire", || {
        d.get(&format!("/v2/box/{short}")).0 == 404
    });
    wait_for(30, "the timeout box to expire", || {
        d.get(&format!("/v2/box/{by_timeout}")).0 == 404
    });
    let expired = events(&d, &short, "box.expired");
    assert_eq!(expired.len(), 1, "{expired:?}");

    // A box whose lifetime ends while boxd is down is deleted at start.
    let (code, v) = d.post("/v2/box", json!({"ttl": 2}));
    assert_eq!(code, 200, "{v}");
    let during = v["id"].as_str().unwrap().to_string();
    let ends = v["expires_at"].as_i64().expect("expires_at");
    d.stop();
    wait_for(30, "the box's lifetime to end while boxd is down", || {
        now_secs() > ends
    });
    d.start_again();
    assert_eq!(d.get(&format!("/v2/box/{during}")).0, 404);
    assert_eq!(events(&d, &during, "box.expired").len(), 1);
    // The long-lived box is still there, with its expiry.
    let (code, v) = d.get(&format!("/v2/box/{keep}"));
    assert_eq!(code, 200, "{v}");
    assert!(v["expires_at"].as_i64().is_some());
}

#[test]
fn idle_boxes_are_paused_unless_kept_alive() {
    let Some(d) = TestDaemon::start_with_config("idle_pause_secs = 1", "") else {
        return;
    };
    let idle = d.create(json!({}));
    let kept = d.create(json!({"keep_alive": true}));
    d.sh(&idle, "echo still-here > /workspace/home/f");
    wait_for(30, "the idle box to be paused", || {
        status(&d, &idle).0 == "paused"
    });
    let paused = events(&d, &idle, "box.pause");
    assert_eq!(paused[0]["data"]["reason"], "idle", "{paused:?}");
    // The keep-alive box has been idle as long, and more.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&d, &kept).0, "idle");
    assert!(events(&d, &kept, "box.pause").is_empty());
    // The idle box comes back on the next call.
    let (code, out, _) = d.sh(&idle, "cat /workspace/home/f");
    assert_eq!((code, out.as_str()), (0, "still-here\n"));
}

#[test]
fn a_box_paused_when_the_daemon_is_killed_comes_back() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    let id = d.create(json!({}));
    d.sh(&id, "echo data > /workspace/home/f");
    for round in 0..3 {
        // The pause may or may not have happened when the daemon dies.
        let url = format!("{}/v2/box/{id}/pause", d.url);
        let key = d.key.clone();
        let sent = std::thread::spawn(move || {
            let _ = reqwest::blocking::Client::new()
                .post(url)
                .header("X-Box-Api-Key", key)
                .send();
        });
        let sent = if round > 0 {
            let _ = sent.join();
            None
        } else {
            Some(sent)
        };
        d.kill9();
        if let Some(sent) = sent {
            let _ = sent.join();
        }
        d.start_again();
        let (state, _) = status(&d, &id);
        assert!(
            state == "paused" || state == "idle",
            "round {round}: state {state}"
        );
        let (code, out, _) = d.sh(&id, "cat /workspace/home/f");
        assert_eq!((code, out.as_str()), (0, "data\n"), "round {round}");
    }
    // Recorded paused, restarted: frozen for real (no CPU used).
    assert_eq!(post_empty(&d, &format!("/v2/box/{id}/pause")).0, 200);
    d.sh(&id, "true"); // resumes
    d.sh(&id, "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &");
    assert_eq!(post_empty(&d, &format!("/v2/box/{id}/pause")).0, 200);
    d.kill9();
    d.start_again();
    let (state, before) = status(&d, &id);
    assert_eq!(state, "paused");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(status(&d, &id).1, before, "the box runs after a restart");
}

#[test]
fn init_commands_run_at_create_and_after_a_restart() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    let cmd = "echo ran >> /workspace/home/init.log";
    let id = d.create(json!({"keep_alive": true, "init_command": cmd}));
    let count = |d: &TestDaemon| {
        let (_, out, _) = d.sh(&id, "cat /workspace/home/init.log 2>/dev/null | wc -l");
        out.trim().parse::<u32>().unwrap_or(0)
    };
    wait_for(30, "the init command at create", || count(&d) == 1);
    let (code, v) = d.get(&format!("/v2/box/{id}/startup"));
    assert_eq!((code, v["init_command"].as_str()), (200, Some(cmd)));
    d.restart();
    wait_for(30, "the init command after a restart", || count(&d) == 2);
    let ran = events(&d, &id, "box.init");
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_eq!(ran[1]["data"]["exit_code"], 0);

    // Set, read back, delete.
    let (code, v) = d.call(
        reqwest::Method::PUT,
        &format!("/v2/box/{id}/startup"),
        Some(json!({"init_command": "echo other"})),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        d.get(&format!("/v2/box/{id}/startup")).1["init_command"],
        "echo other"
    );
    let (code, _) = d.call(
        reqwest::Method::PUT,
        &format!("/v2/box/{id}/startup"),
        Some(json!({"init_command": ""})),
    );
    assert_eq!(code, 400);
    assert_eq!(d.delete(&format!("/v2/box/{id}/startup")).0, 200);
    assert_eq!(
        d.get(&format!("/v2/box/{id}/startup")).1["init_command"],
        ""
    );
    d.restart();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&d), 2, "a removed init command ran");
}

#[test]
fn a_box_restart_keeps_its_files_and_env_ends_its_processes_and_reruns_init() {
    let Some(d) = TestDaemon::start() else {
        return;
    };
    let cmd = "echo ran >> /workspace/home/init.log";
    let id = d.create(json!({"keep_alive": true, "init_command": cmd,
        "env_vars": {"MARK": "m1"}}));
    let count = |d: &TestDaemon| {
        let (_, out, _) = d.sh(&id, "cat /workspace/home/init.log 2>/dev/null | wc -l");
        out.trim().parse::<u32>().unwrap_or(0)
    };
    wait_for(30, "the init command at create", || count(&d) == 1);
    let (code, _, err) = d.sh(
        &id,
        "echo data > /workspace/home/f && (setsid sleep 1000 >/dev/null 2>&1 &) && \
         for i in $(seq 100); do pgrep -x sleep && exit 0; sleep 0.05; done; exit 1",
    );
    assert_eq!(code, 0, "{err}");
    // A paused box restarts too (and comes back running).
    assert_eq!(post_empty(&d, &format!("/v2/box/{id}/pause")).0, 200);
    let (code, v) = post_empty(&d, &format!("/v2/box/{id}/restart"));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "idle");
    let (_, out, _) = d.sh(
        &id,
        "cat /workspace/home/f; echo $MARK; pgrep -x sleep || echo none",
    );
    assert_eq!(out, "data\nm1\nnone\n");
    wait_for(30, "the init command after the box's restart", || {
        count(&d) == 2
    });
    let restarts = events(&d, &id, "box.restart");
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(restarts[0]["data"]["from"], "paused");
    let inits = events(&d, &id, "box.init");
    assert_eq!(
        inits.last().unwrap()["data"]["when"],
        "box restart",
        "{inits:?}"
    );
    assert_eq!(post_empty(&d, "/v2/box/nope/restart").0, 404);
}
