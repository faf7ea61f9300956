//! The HTTP API against a real `boxd serve`: auth and teams, the box
//! lifecycle, exec and streams, files, errors, concurrency, audit, metrics.

mod common;

use common::daemon::{json_of, TestDaemon};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::Read;

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a bare JSON array")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect()
}

/// A key for a second team, made in the database the daemon uses.
fn other_team_key(d: &TestDaemon) -> String {
    let store = boxd_store::Store::open(d.dir.join("boxd.db")).expect("open the store");
    let team = store.create_team("other").expect("team");
    store.create_key(&team.id, "t").expect("key").1
}

#[test]
fn keys_are_required_and_see_only_their_teams_boxes() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({"name": "mine"}));

    let (s, v) = json_of(d.http.get(format!("{}/v2/box", d.url)).send().unwrap());
    assert_eq!(s, 401, "{v}");
    let (s, _) = json_of(
        d.http
            .get(format!("{}/v2/box", d.url))
            .header("X-Box-Api-Key", "boxd_not-a-key-at-all-000000000000000")
            .send()
            .unwrap(),
    );
    assert_eq!(s, 401);
    // Authorization: Bearer works too.
    let (s, v) = json_of(
        d.http
            .get(format!("{}/v2/box/{id}", d.url))
            .bearer_auth(&d.key)
            .send()
            .unwrap(),
    );
    assert_eq!((s, v["id"].as_str()), (200, Some(id.as_str())));

    let other = other_team_key(&d);
    let as_other = |m: Method, p: &str| {
        json_of(
            d.http
                .request(m, format!("{}{p}", d.url))
                .header("X-Box-Api-Key", &other)
                .send()
                .unwrap(),
        )
    };
    assert_eq!(as_other(Method::GET, &format!("/v2/box/{id}")).0, 404);
    assert_eq!(as_other(Method::GET, "/v2/box/mine").0, 404);
    assert_eq!(as_other(Method::DELETE, &format!("/v2/box/{id}")).0, 404);
    assert_eq!(as_other(Method::GET, "/v2/box").1, json!([]));
    // The box is untouched.
    assert_eq!(d.sh(&id, "echo ok").1, "ok\n");
}

#[test]
fn box_lifecycle_by_id_and_name_with_labels() {
    let Some(d) = TestDaemon::start() else { return };
    let a = d.create(
        json!({"name": "alpha", "labels": ["env:test", "a"], "size": "medium",
                            "env_vars": {"GREETING": "hi"}, "metadata": {"owner": "t"}}),
    );
    let b = d.create(json!({"name": "beta", "labels": null, "runtime": null}));

    let (_, by_name) = d.get("/v2/box/alpha");
    assert_eq!(by_name["id"], json!(a));
    assert_eq!(by_name["status"], "idle");
    assert_eq!(by_name["size"], "medium");
    assert_eq!(by_name["metadata"]["owner"], "t");
    assert!(by_name["created_at"].is_i64(), "integer timestamps");
    let status = d.get(&format!("/v2/box/{a}/status")).1;
    assert_eq!(status["status"], "idle", "{status}");
    assert!(status["total_cpu_ns"].is_u64(), "{status}");
    assert_eq!(d.sh(&a, "echo $GREETING").1, "hi\n");

    assert_eq!(ids(&d.get("/v2/box?label=env%3Atest").1), vec![a.clone()]);
    let mut all = ids(&d.get("/v2/box").1);
    all.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(all, want);

    let (s, v) = d.post(
        &format!("/v2/box/{b}/config/labels"),
        json!({"label": "new"}),
    );
    assert_eq!((s, v["labels"].clone()), (200, json!(["new"])));
    assert_eq!(
        d.post(
            &format!("/v2/box/{b}/config/labels"),
            json!({"label": "new"})
        )
        .0,
        409
    );
    assert_eq!(ids(&d.get("/v2/box?label=new").1), vec![b.clone()]);
    let (s, v) = d.delete(&format!("/v2/box/{b}/config/labels/new"));
    assert_eq!((s, v["labels"].clone()), (200, json!([])));
    assert_eq!(d.delete(&format!("/v2/box/{b}/config/labels/new")).0, 404);

    // A second box with the same name is refused and changes nothing.
    assert_eq!(d.post("/v2/box", json!({"name": "alpha"})).0, 409);

    assert_eq!(d.delete("/v2/box/alpha").0, 200);
    assert_eq!(d.get(&format!("/v2/box/{a}")).0, 404);
    assert_eq!(
        d.post(&format!("/v2/box/{a}/exec"), json!({"command": ["true"]}))
            .0,
        404
    );
    // Bulk delete is all or nothing.
    assert_eq!(
        d.call(
            Method::DELETE,
            "/v2/box",
            Some(json!({"ids": [b, "box-none"]}))
        )
        .0,
        404
    );
    assert_eq!(ids(&d.get("/v2/box").1), vec![b.clone()]);
    assert_eq!(
        d.call(Method::DELETE, "/v2/box", Some(json!({"ids": [b]})))
            .0,
        200
    );
    assert_eq!(d.get("/v2/box").1, json!([]));
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({"name": "keep"}));
    let raw = |body: &str| {
        json_of(
            d.req(Method::POST, "/v2/box")
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    };
    let (s, v) = raw("{not json");
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.post("/v2/box", json!({"runtime": "cobol"}));
    assert!(
        s == 400 && v["error"].as_str().unwrap().contains("cobol"),
        "{v}"
    );
    let (s, v) = d.post("/v2/box", json!({"env_vars": {"LD_PRELOAD": "/x.so"}}));
    assert!(
        s == 400 && v["error"].as_str().unwrap().contains("LD_PRELOAD"),
        "{v}"
    );
    let (s, v) = d.post("/v2/box", json!({"labels": ["no spaces"]}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.post("/v2/box", json!({"name": "snapshots"}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.post("/v2/box", json!({"size": "huge"}));
    assert_eq!(s, 422, "{v}");
    // Features other parts of boxd own answer 501, naming the feature.
    let (s, v) = d.post("/v2/box", json!({"github_token": "t"}));
    assert!(
        s == 501 && v["error"].as_str().unwrap().contains("git"),
        "{v}"
    );
    // Bad rules are named (never their values).
    let (s, v) = d.post(
        "/v2/box",
        json!({"attach_headers": {"API.example.com": {"X-Key": "sekrit-1"}}}),
    );
    assert!(
        s == 400 && v["error"].as_str().unwrap().contains("API.example.com"),
        "{v}"
    );
    let (s, v) = d.post(
        "/v2/box",
        json!({"attach_headers": {"api.example.com": {"Host": "sekrit-2"}}}),
    );
    assert!(s == 400 && !v.to_string().contains("sekrit"), "{v}");
    let (s, v) = d.post(&format!("/v2/box/{id}/schedules"), json!({}));
    assert!(
        s == 501 && v["error"].as_str().unwrap().contains("schedules"),
        "{v}"
    );
    let (s, _) = d.get(&format!("/v2/box/{id}/git/status"));
    assert_eq!(s, 501);
    // Like every /v2 route, those check the key first.
    let s = d
        .http
        .get(format!("{}/v2/box/{id}/git/status", d.url))
        .send()
        .unwrap()
        .status();
    assert_eq!(s, 401);

    let (s, v) = d.get(&format!("/v2/box/{id}/files/read?path=../../../etc/passwd"));
    assert!(
        s == 400 && v["error"].as_str().unwrap().contains("root"),
        "{v}"
    );
    let (s, v) = d.post(&format!("/v2/box/{id}/exec"), json!({"command": []}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.post(
        &format!("/v2/box/{id}/exec"),
        json!({"command": ["true"], "env": {"PATH": "/evil"}}),
    );
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.get("/v2/box/no-such-box");
    assert!(
        s == 404 && v["error"].as_str().unwrap().contains("no-such-box"),
        "{v}"
    );
    let (s, _) = d.get("/v2/nothing-here");
    assert_eq!(s, 404);
    let (s, _) = d.call(Method::PATCH, "/v2/box", None);
    assert_eq!(s, 405);
    // Oversized JSON (the default limit is 16 MiB).
    let big = format!(
        "{{\"path\":\"a\",\"content\":\"{}\"}}",
        "x".repeat(17 << 20)
    );
    let (s, v) = json_of(
        d.req(Method::POST, &format!("/v2/box/{id}/files/write"))
            .header("content-type", "application/json")
            .body(big)
            .send()
            .unwrap(),
    );
    assert_eq!(s, 413, "{v}");
    // Nothing changed: still one box, no file, the daemon still serves.
    assert_eq!(ids(&d.get("/v2/box").1), vec![id.clone()]);
    assert_eq!(d.sh(&id, "ls /workspace/home | wc -l").1.trim(), "0");
}

#[test]
fn exec_separates_streams_and_exec_stream_delivers_output_as_produced() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({}));
    let (s, v) = d.post(
        &format!("/v2/box/{id}/exec"),
        json!({"command": ["sh", "-c", "echo out; echo err >&2; exit 7"]}),
    );
    assert_eq!(s, 200);
    assert_eq!(
        (
            v["exit_code"].as_i64(),
            v["output"].as_str(),
            v["error"].as_str()
        ),
        (Some(7), Some("out\n"), Some("err\n"))
    );
    // `folder`: relative to /workspace/home.
    d.sh(&id, "mkdir -p /workspace/home/src");
    let (_, v) = d.post(
        &format!("/v2/box/{id}/exec"),
        json!({"command": ["pwd"], "folder": "src"}),
    );
    assert_eq!(v["output"], "/workspace/home/src\n");
    // Command not found is an exit code, not an API error.
    let (s, v) = d.post(
        &format!("/v2/box/{id}/exec"),
        json!({"command": ["no-such-cmd"]}),
    );
    assert_eq!((s, v["exit_code"].as_i64()), (200, Some(127)), "{v}");
    let text = d
        .req(Method::POST, &format!("/v2/box/{id}/exec-stream"))
        .json(&json!({"command": ["no-such-cmd"]}))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains("not found") && text.contains("\"exit_code\":127"),
        "{text}"
    );

    // The stream gives "first" while the command still waits for a file
    // that only this test creates after reading it: output is streamed.
    let script = "echo first; i=0; while [ ! -e /tmp/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo second; exit 3";
    let mut resp = d
        .req(Method::POST, &format!("/v2/box/{id}/exec-stream"))
        .json(&json!({"command": ["sh", "-c", script]}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first\n") {
        let n = resp.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream ended early: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&got).contains("second"));
    let (s, _) = d.post(
        &format!("/v2/box/{id}/files/write"),
        json!({"path": "/tmp/go", "content": ""}),
    );
    assert_eq!(s, 200);
    resp.read_to_end(&mut got).unwrap();
    let text = String::from_utf8(got).unwrap();
    let (output, trailer) = text.split_once("event: exit\n").expect("exit trailer");
    assert_eq!(output, "first\nsecond\n");
    let data = trailer.strip_prefix("data: ").expect("data line");
    assert!(data.ends_with("\n\n"), "{trailer:?}");
    let exit: Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(exit["exit_code"], 3);
    assert!(exit["cpu_ns"].is_u64());
}

#[test]
fn code_runs_snippets_in_each_language() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({}));
    let run = |lang: &str, code: &str| {
        let (s, v) = d.post(
            &format!("/v2/box/{id}/code"),
            json!({"code": code, "language": lang}),
        );
        assert_eq!(s, 200, "{v}");
        v
    };
    assert_eq!(run("python", "print(6*7)")["output"], "42\n");
    assert_eq!(run("bash", "echo $((6*7))")["output"], "42\n");
    if std::path::Path::new("/usr/bin/node").exists() {
        assert_eq!(run("js", "console.log(6*7)")["output"], "42\n");
    } else {
        common::skip("(js part) node is not installed on this host");
    }
    let (s, _) = d.post(
        &format!("/v2/box/{id}/code"),
        json!({"code": "x", "language": "cobol"}),
    );
    assert_eq!(s, 422);
    let mut resp = d
        .req(Method::POST, &format!("/v2/box/{id}/code-stream"))
        .json(&json!({"code": "import sys; print('a'); sys.exit(2)", "language": "python"}))
        .send()
        .unwrap();
    let mut text = String::new();
    resp.read_to_string(&mut text).unwrap();
    assert_eq!(
        text,
        "a\nevent: exit\ndata: ".to_string() + &text["a\nevent: exit\ndata: ".len()..]
    );
    assert!(text.contains("\"exit_code\":2"), "{text}");
}

#[test]
fn files_round_trip_upload_and_download() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({}));
    let p = |s: &str| format!("/v2/box/{id}/files/{s}");
    assert_eq!(
        d.post(
            &p("write"),
            json!({"path": "/workspace/home/./d/../a.txt", "content": "hello"})
        )
        .0,
        200
    );
    assert_eq!(d.get(&p("read?path=a.txt")).1["content"], "hello");
    // Binary through base64.
    assert_eq!(
        d.post(
            &p("write"),
            json!({"path": "bin", "content": "AAH/", "encoding": "base64"})
        )
        .0,
        200
    );
    assert_eq!(
        d.get(&p("read?path=bin&encoding=base64")).1["content"],
        "AAH/"
    );
    assert_eq!(
        d.get(&p("read?path=bin")).0,
        400,
        "not UTF-8 without base64"
    );
    assert_eq!(
        d.get(&p("read?path=a.txt&offset=1&length=3")).1["content"],
        "ell"
    );

    let (_, st) = d.get(&p("stat?path=a.txt"));
    assert_eq!(
        (st["type"].as_str(), st["size"].as_u64()),
        (Some("file"), Some(5))
    );
    assert!(st["inode"].as_u64().unwrap() > 0 && !st["version"].as_str().unwrap().is_empty());
    assert_eq!(d.get(&p("stat?path=nope")).0, 404);

    assert_eq!(
        d.post(&p("mkdir"), json!({"path": "x/y", "parents": false}))
            .0,
        404
    );
    assert_eq!(
        d.post(&p("mkdir"), json!({"path": "x/y", "parents": true}))
            .0,
        200
    );
    assert_eq!(
        d.post(&p("mkdir"), json!({"path": "x/y", "parents": false}))
            .0,
        409
    );
    assert_eq!(
        d.post(&p("rename"), json!({"from": "a.txt", "to": "x/y/b.txt"}))
            .0,
        200
    );
    let (_, list) = d.get(&p("list?folder=%2Fworkspace%2Fhome%2Fx%2Fy"));
    let files = list["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], "/workspace/home/x/y/b.txt");
    assert_eq!(files[0]["is_dir"], false);
    assert!(files[0]["mod_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        d.post(&p("remove"), json!({"path": "x", "recursive": false}))
            .0,
        400
    );
    assert_eq!(d.get(&p("read?path=x/y/b.txt")).1["content"], "hello");
    assert_eq!(
        d.post(&p("remove"), json!({"path": "x", "recursive": true}))
            .0,
        200
    );
    assert_eq!(d.get(&p("stat?path=x")).0, 404);

    // Upload: Python's order (all paths, then all files).
    let form = reqwest::blocking::multipart::Form::new()
        .text("paths", "/workspace/home/up/one.txt")
        .text("paths", "/workspace/home/up/deep/two.bin")
        .part(
            "files",
            reqwest::blocking::multipart::Part::bytes(b"1".to_vec()).file_name("one.txt"),
        )
        .part(
            "files",
            reqwest::blocking::multipart::Part::bytes(vec![7u8; 300_000]).file_name("two.bin"),
        );
    let (s, v) = json_of(
        d.req(Method::POST, &p("upload"))
            .multipart(form)
            .send()
            .unwrap(),
    );
    assert_eq!(s, 200, "{v}");
    let mut r = d
        .req(
            Method::GET,
            &p("download?folder=%2Fworkspace%2Fhome%2Fup%2Fdeep%2Ftwo.bin"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, vec![7u8; 300_000]);
    // A folder downloads as a tar archive.
    let r = d.req(Method::GET, &p("download?folder=up")).send().unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-tar");
    let mut names: Vec<String> = tar::Archive::new(r)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert!(
        names.iter().any(|n| n.ends_with("one.txt"))
            && names.iter().any(|n| n.ends_with("two.bin")),
        "{names:?}"
    );
    let form = reqwest::blocking::multipart::Form::new().part(
        "files",
        reqwest::blocking::multipart::Part::bytes(b"1".to_vec()).file_name("x"),
    );
    assert_eq!(
        json_of(
            d.req(Method::POST, &p("upload"))
                .multipart(form)
                .send()
                .unwrap()
        )
        .0,
        400
    );
}

#[test]
fn fifty_concurrent_creates_all_succeed_and_are_isolated() {
    let Some(d) = TestDaemon::start() else { return };
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let d = &d;
                s.spawn(move || {
                    let id = d.create(json!({"name": format!("c{i}")}));
                    d.post(
                        &format!("/v2/box/{id}/files/write"),
                        json!({"path": "mine", "content": id}),
                    );
                    id
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("create thread"))
            .collect()
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50);
    for id in &ids {
        // Each box sees its own file only, and its own processes only.
        let (code, out, _) = d.sh(id, "cat /workspace/home/mine; echo; ls /workspace/home | wc -l; ps -e --no-headers | wc -l");
        assert_eq!(code, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], id);
        assert_eq!(lines[1], "1");
        // The agent, this command's tracker, sh, ps and wc.
        assert!(lines[2].parse::<u32>().unwrap() <= 5, "{out}");
    }
    assert_eq!(d.get("/v2/box").1.as_array().unwrap().len(), 50);
}

#[test]
fn boxes_survive_daemon_restarts_and_dead_ones_restart_on_their_files() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    let keep = d.create(json!({"name": "keep"}));
    let dies = d.create(json!({"name": "dies", "env_vars": {"MARK": "m1"},
        "init_command": "echo boot >> /workspace/home/boots"}));
    for id in [&keep, &dies] {
        d.post(
            &format!("/v2/box/{id}/files/write"),
            json!({"path": "f", "content": "kept"}),
        );
    }
    d.restart();
    assert_eq!(d.sh(&keep, "cat f").1, "kept");

    // kill -9 loses nothing either.
    d.kill9();
    // While the daemon is down, one box's init dies.
    let rec: Value = serde_json::from_slice(
        &std::fs::read(d.dir.join("pool/boxes").join(&dies).join("box.json")).unwrap(),
    )
    .unwrap();
    let pid = rec["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..200 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    d.start_again();
    assert_eq!(d.sh(&keep, "cat f").1, "kept");
    // The dead box was started again on its files (as after a host
    // reboot), with its env, and its init command ran again.
    let (_, v) = d.get(&format!("/v2/box/{dies}"));
    assert_eq!(
        v["status"],
        "idle",
        "{v}\n{}",
        d.get(&format!("/v2/audit?box={dies}")).1
    );
    assert_eq!(d.sh(&dies, "cat f; echo \" $MARK\"").1, "kept m1\n");
    let kinds = |d: &TestDaemon| -> Vec<String> {
        let (_, v) = d.get(&format!("/v2/audit?box={dies}"));
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let k = kinds(&d);
    assert!(
        k.contains(&"box.failed".to_string()) && k.contains(&"box.restart".to_string()),
        "{k:?}"
    );
    let boots = |d: &TestDaemon| d.sh(&dies, "cat /workspace/home/boots").1.lines().count();
    let t = std::time::Instant::now();
    while boots(&d) < 2 {
        assert!(
            t.elapsed().as_secs() < 20,
            "the init command did not run again"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Its init dies while boxd runs: calls say how to get it back, and a
    // restart does, files kept.
    let rec: Value = serde_json::from_slice(
        &std::fs::read(d.dir.join("pool/boxes").join(&dies).join("box.json")).unwrap(),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rec["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = std::time::Instant::now();
    let (s, v) = loop {
        let (s, v) = d.post(
            &format!("/v2/box/{dies}/exec"),
            json!({"command": ["true"]}),
        );
        // (A call racing the death may see the connection reset.)
        if s == 409 || t.elapsed().as_secs() > 10 {
            break (s, v);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        s == 409 && v["error"].as_str().unwrap().contains("restart"),
        "{v}"
    );
    let (s, v) = d.post(&format!("/v2/box/{dies}/restart"), json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "idle");
    assert_eq!(d.sh(&dies, "cat f").1, "kept");
    assert_eq!(d.delete(&format!("/v2/box/{dies}")).0, 200);
    assert!(!d.dir.join("pool/boxes").join(&dies).exists());
    // The admin key from BOXD_API_KEY still works, and only one exists.
    let store = boxd_store::Store::open(d.dir.join("boxd.db")).unwrap();
    let team = store.team_by_name("default").unwrap().unwrap();
    assert_eq!(store.list_keys(&team.id).unwrap().len(), 1);
}

#[test]
fn a_create_cut_by_kill_9_leaves_no_half_box() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    // Creates in flight when the daemon is killed.
    std::thread::scope(|s| {
        for i in 0..6 {
            let d = &d;
            s.spawn(move || {
                let _ = d
                    .req(Method::POST, "/v2/box")
                    .json(&json!({"name": format!("k{i}")}))
                    .send();
            });
        }
        // Kill once a create is under way: its box directory is on disk
        // (polled every 10 ms, for 10 s at most).
        let boxes = d.dir.join("pool/boxes");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(&boxes).map_or(true, |mut rd| rd.next().is_none()) {
            assert!(
                std::time::Instant::now() < deadline,
                "no create reached the disk"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    });
    d.kill9();
    d.start_again();
    // Every box the API lists works; nothing else is on disk.
    let listed = ids(&d.get("/v2/box").1);
    for id in &listed {
        assert_eq!(d.sh(id, "echo ok").1, "ok\n", "box {id}");
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(d.dir.join("pool/boxes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut want = listed.clone();
    want.sort();
    assert_eq!(on_disk, want, "boxes on disk match the API's list");
}

#[test]
fn a_delete_cut_by_kill_9_is_finished_at_the_next_start() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    let keep = d.create(json!({"name": "keep"}));
    let mut cut = 0;
    for round in 0..3 {
        let id = d.create(json!({}));
        // Many files: removing the box's layer takes a while.
        let (code, _, err) = d.sh(
            &id,
            "mkdir -p /workspace/home/t && cd /workspace/home/t && seq 1 20000 | xargs touch",
        );
        assert_eq!(code, 0, "{err}");
        std::thread::scope(|s| {
            let d = &d;
            let path = format!("/v2/box/{id}");
            s.spawn(move || {
                let _ = d.req(Method::DELETE, &path).send();
            });
            // The box leaves the API as soon as the delete is recorded.
            let t = std::time::Instant::now();
            while d.get(&format!("/v2/box/{id}")).0 == 200 {
                assert!(t.elapsed().as_secs() < 30, "the delete never started");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        });
        d.kill9();
        d.start_again();
        assert_eq!(d.get(&format!("/v2/box/{id}")).0, 404, "round {round}");
        assert_eq!(
            ids(&d.get("/v2/box").1),
            vec![keep.clone()],
            "round {round}"
        );
        assert!(
            !d.dir.join("pool/boxes").join(&id).exists(),
            "round {round}: the deleted box's files are still there"
        );
        let (_, v) = d.get(&format!("/v2/audit?box={id}"));
        let deletes: Vec<&Value> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "box.delete")
            .collect();
        assert_eq!(deletes.len(), 1, "round {round}: {v}");
        if deletes[0]["data"]["finished_at_start"] == true {
            cut += 1;
        }
    }
    // Nothing of the kept box was lost.
    assert_eq!(d.sh(&keep, "echo ok").1, "ok\n");
    eprintln!("{cut} of 3 deletes were cut by the kill and finished at start");
}

#[test]
fn audit_trail_records_actions_and_follows_new_events() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({"labels": ["team:x"]}));
    d.sh(&id, "exit 4");
    d.post(
        &format!("/v2/box/{id}/files/write"),
        json!({"path": "f", "content": "x"}),
    );
    let (_, v) = d.get(&format!("/v2/audit?box={id}"));
    let events = v["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["box.create", "exec", "file.write"]);
    let exec = &events[1];
    assert_eq!(exec["data"]["exit_code"], 4);
    assert_eq!(exec["data"]["command"], json!(["sh", "-c", "exit 4"]));
    assert!(exec["data"]["duration_ms"].is_u64());
    assert!(exec["key_id"].is_string());
    assert_eq!(exec["data"]["labels"], json!(["team:x"]));
    let (_, v) = d.get("/v2/audit?kind=exec");
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    let (_, logs) = d.get(&format!("/v2/box/{id}/logs"));
    assert_eq!(logs["logs"].as_array().unwrap().len(), 3);
    assert!(logs["logs"][1]["timestamp"].is_i64());

    // Follow: replay after the last seen event, then a new one arrives.
    let last = events[2]["seq"].as_i64().unwrap();
    let mut resp = d
        .req(
            Method::GET,
            &format!("/v2/audit?box={id}&follow=true&after={last}"),
        )
        .send()
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    d.sh(&id, "true");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\n\n") {
        let n = resp.read(&mut buf).unwrap();
        assert!(n > 0, "follow stream ended");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("event: audit\ndata: "), "{text}");
    assert!(text.contains("\"kind\":\"exec\""), "{text}");

    // Deleting the box keeps its events.
    d.delete(&format!("/v2/box/{id}"));
    let (_, v) = d.get(&format!("/v2/audit?box={id}"));
    assert_eq!(
        v["events"].as_array().unwrap().last().unwrap()["kind"],
        "box.delete"
    );
}

#[test]
fn team_env_applies_to_new_boxes_and_is_never_returned() {
    let Some(d) = TestDaemon::start() else { return };
    let (s, _) = d.call(
        Method::PUT,
        "/v2/box/settings/env/TEAM_TOKEN",
        Some(json!({"value": "tv-1234567"})),
    );
    assert_eq!(s, 200);
    let (_, v) = d.get("/v2/box/settings/env");
    assert!(v["env_vars"]["TEAM_TOKEN"].is_string());
    assert!(!v.to_string().contains("tv-1234567"), "{v}");
    let id = d.create(json!({}));
    assert_eq!(d.sh(&id, "echo $TEAM_TOKEN").1, "tv-1234567\n");
    let (s, _) = d.call(
        Method::PUT,
        "/v2/box/settings/env/LD_PRELOAD",
        Some(json!({"value": "x"})),
    );
    assert_eq!(s, 400);
    assert_eq!(d.delete("/v2/box/settings/env/TEAM_TOKEN").0, 200);
    assert_eq!(d.delete("/v2/box/settings/env/TEAM_TOKEN").0, 404);
}

#[test]
fn metrics_need_an_operator_key_and_health_and_openapi_are_served() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({}));
    d.sh(&id, "true");
    // The figures cover every team: no key is 401, another team's 403.
    let anonymous = d.http.get(format!("{}/metrics", d.url)).send().unwrap();
    assert_eq!(anonymous.status(), 401);
    let other = other_team_key(&d);
    let (status, v) = json_of(
        d.http
            .get(format!("{}/metrics", d.url))
            .bearer_auth(&other)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 403, "{v}");
    let text = d
        .req(Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(text.contains("boxd_boxes{state=\"running\"} 1"), "{text}");
    assert!(text.contains("boxd_execs_total{kind=\"exec\"} 1"), "{text}");
    assert!(
        text.contains("boxd_box_create_duration_seconds_count 1"),
        "{text}"
    );
    let (_, doc) = json_of(
        d.http
            .get(format!("{}/openapi.json", d.url))
            .send()
            .unwrap(),
    );
    for path in [
        "/v2/box",
        "/v2/box/{id}/exec-stream",
        "/v2/box/{id}/files/upload",
        "/v2/audit",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    // The document says how to authenticate: both schemes, needed by every
    // operation but /healthz.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["in"], "header", "{schemes}");
    assert!(
        schemes["api_key"]["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case("X-Box-Api-Key")),
        "{schemes}"
    );
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(doc["security"], json!([{"api_key": []}, {"bearer": []}]));
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
}

#[test]
fn a_box_whose_create_never_finished_is_removed_at_start() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    d.stop();
    // What a kill -9 between "runtime made the box" and "store says
    // running" leaves: a `creating` record and a whole runtime box.
    let store = boxd_store::Store::open(d.dir.join("boxd.db")).unwrap();
    let team = store.team_by_name("default").unwrap().unwrap();
    store
        .insert_box(&boxd_store::NewBox {
            id: "box-half".into(),
            team_id: team.id.clone(),
            name: Some("half".into()),
            state: boxd_store::BoxState::Creating,
            runtime: "host".into(),
            spec: json!({}),
            labels: Default::default(),
        })
        .unwrap();
    drop(store);
    {
        let mut cfg = boxd_runtime::RuntimeConfig::new(&d.dir, common::AGENT);
        cfg.cgroup_parent = d.cgroup_parent.clone();
        let rt = boxd_runtime::Runtime::new(cfg).unwrap();
        rt.create(&boxd_runtime::BoxSpec::new("box-half")).unwrap();
    }
    assert!(d.dir.join("pool/boxes/box-half").exists());
    d.start_again();
    assert_eq!(d.get("/v2/box/half").0, 404);
    assert_eq!(d.get("/v2/box").1, json!([]));
    assert!(
        !d.dir.join("pool/boxes/box-half").exists(),
        "the runtime box is gone"
    );
    let (_, v) = d.get("/v2/audit?box=box-half");
    assert_eq!(v["events"][0]["kind"], "box.create_abandoned");
}

#[test]
fn a_box_is_running_while_a_call_is_in_flight_and_idle_otherwise() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({}));
    let status = || d.get(&format!("/v2/box/{id}/status")).1["status"].clone();
    assert_eq!(status(), "idle");
    // A stream that waits for a file only this test creates.
    let script = "echo started; i=0; while [ ! -e /tmp/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done";
    let mut resp = d
        .req(Method::POST, &format!("/v2/box/{id}/exec-stream"))
        .json(&json!({"command": ["sh", "-c", script]}))
        .send()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("started\n") {
        let n = resp.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(status(), "running");
    assert_eq!(d.get(&format!("/v2/box/{id}")).1["status"], "running");
    d.sh(&id, "touch /tmp/go");
    let mut rest = String::new();
    resp.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("event: exit"), "{rest}");
    assert_eq!(status(), "idle");
}

#[test]
fn a_network_policy_is_echoed_as_it_was_set() {
    let Some(d) = TestDaemon::start() else { return };
    let policy = json!({"mode": "custom", "allowed_domains": ["api.example.com"]});
    let id = d.create(json!({ "network_policy": policy }));
    let (_, v) = d.get(&format!("/v2/box/{id}"));
    assert_eq!(v["network_policy"], policy, "{v}");
    let (_, v) = d.get("/v2/box");
    assert_eq!(v[0]["network_policy"], policy, "{v}");
}

#[test]
fn silent_and_half_sent_connections_are_closed_and_a_flood_is_capped() {
    use std::io::Write;
    use std::time::Duration;
    let Some(d) =
        TestDaemon::start_with_config("max_api_connections = 4\nheader_read_timeout_secs = 1", "")
    else {
        return;
    };
    let addr = d.url.trim_start_matches("http://").to_string();
    let connect = || {
        let s = std::net::TcpStream::connect(&addr).expect("connect");
        // Bounds every read below: a connection the daemon keeps open
        // fails the test instead of hanging it.
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    };
    // The daemon closes its side: the read sees the end, not a timeout.
    let closed = |mut s: std::net::TcpStream| {
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    // Four connections that never finish a request fill the budget.
    let mut held: Vec<std::net::TcpStream> = (0..4).map(|_| connect()).collect();
    held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A fifth gets no answer to a whole request: it is closed unserved.
    let mut fifth = connect();
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = fifth.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "a connection past max_api_connections was served: {}",
        String::from_utf8_lossy(&answer)
    );
    // The silent and the half-sent ones are closed by the header timeout,
    // and the daemon serves again.
    for (i, s) in held.drain(..).enumerate() {
        assert!(
            closed(s),
            "connection {i} (0: half-sent, others silent) stayed open"
        );
    }
    let (status, v) = d.get("/healthz");
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    // A kept-alive connection left idle after its answer is closed too.
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let ended = idle.read_to_end(&mut answer);
    assert!(ended.is_ok(), "an idle kept-alive connection stayed open");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}

#[test]
fn a_json_array_body_is_refused_not_read_positionally() {
    let Some(d) = TestDaemon::start() else { return };
    for (path, body) in [
        ("/v2/box", json!(["positional", ["label"]])),
        ("/v2/box", json!("a string")),
        ("/v2/volumes", json!(["vol"])),
    ] {
        let (s, v) = d.post(path, body.clone());
        assert_eq!(s, 400, "{path} {body}: {v}");
        assert!(v["error"].as_str().unwrap().contains("JSON object"), "{v}");
    }
    let (s, v) = d.call(Method::DELETE, "/v2/box/snapshots", Some(json!([["s"]])));
    assert_eq!(s, 400, "{v}");
    assert!(ids(&d.get("/v2/box").1).is_empty());
    assert!(d.get("/v2/volumes").1["volumes"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_box_restarted_again_and_again_gets_its_network_each_time() {
    let Some(d) = TestDaemon::start() else {
        return;
    };
    let id = d.create(json!({}));
    // Each restart makes the slot's link anew while the previous network
    // namespace is still being torn down by the kernel.
    for round in 0..20 {
        let (s, v) = d.post(&format!("/v2/box/{id}/restart"), json!({}));
        assert_eq!(s, 200, "round {round}: {v}");
        let (code, out, err) = d.sh(&id, "ip -o -4 addr show dev eth0 && ip route show default");
        assert_eq!(code, 0, "round {round}: {out}{err}");
        assert!(
            out.contains("inet ") && out.contains("default"),
            "round {round}: {out}"
        );
    }
}

#[test]
fn a_failure_inside_boxd_answers_its_request_id_not_its_internals() {
    let Some(d) = TestDaemon::start() else { return };
    let id = d.create(json!({}));
    // Break the storage pool under the daemon: its snapshot folder becomes
    // a file, so taking a snapshot fails inside boxd with a host path.
    let snapshots = d.dir.join("pool").join("snapshots");
    std::fs::remove_dir(&snapshots).expect("the pool's snapshot folder is empty");
    std::fs::write(&snapshots, b"not a folder").expect("put a file in its place");
    let r = d
        .req(Method::POST, &format!("/v2/box/{id}/snapshots"))
        .json(&json!({"name": "s"}))
        .send()
        .unwrap();
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an x-request-id header")
        .to_string();
    let (status, v) = json_of(r);
    std::fs::remove_file(&snapshots).expect("remove the file");
    std::fs::create_dir(&snapshots).expect("restore the folder");
    assert_eq!(status, 500, "{v}");
    let message = v["error"].as_str().expect("an error message");
    let host_dir = d.dir.to_string_lossy().to_string();
    assert!(
        !message.contains(&host_dir),
        "a host path in the answer: {message}"
    );
    assert!(
        !message.contains("os error") && !message.contains("Not a directory"),
        "{message}"
    );
    assert!(
        message.contains(&request_id) && message.contains("snapshots"),
        "{message}"
    );
    // The operator finds the details under the id.
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains(&request_id) && l.contains("request failed"))
        .unwrap_or_else(|| panic!("no log line for {request_id}:\n{log}"));
    assert!(line.contains(&host_dir), "{line}");
    // And the daemon keeps serving.
    assert_eq!(d.sh(&id, "echo ok").1, "ok\n");
}

/// The ids of the team's boxes.
fn box_ids(d: &TestDaemon) -> Vec<String> {
    let (s, v) = d.get("/v2/box");
    assert_eq!(s, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn agent_configuration_is_accepted_checked_and_returned_and_only_runs_answer_501() {
    let Some(d) = TestDaemon::start() else {
        return;
    };
    let (s, b) = d.post(
        "/v2/box",
        json!({
            "agent": "codex",
            "model": "openai/gpt-5.5",
            "agent_api_key": "sk-test-key-1",
            "skills": ["upstash/qstash-js", "upstash/qstash-js", "upstash/workflow-js"],
            "mcp_servers": [
                {"name": "fs", "source": "npm", "package_or_url": "@modelcontextprotocol/server-filesystem",
                 "args": ["/workspace/home"]},
                {"name": "web", "source": "url", "package_or_url": "https://mcp.example.com/sse",
                 "headers": null}
            ]
        }),
    );
    assert_eq!(s, 200, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let (_, got) = d.get(&format!("/v2/box/{id}"));
    for v in [&b, &got] {
        assert_eq!(v["agent"], "codex", "{v}");
        assert_eq!(v["model"], "openai/gpt-5.5", "{v}");
        assert_eq!(
            v["enabled_skills"],
            json!(["upstash/qstash-js", "upstash/workflow-js"]),
            "{v}"
        );
        assert_eq!(
            v["mcp_servers"][0]["args"],
            json!(["/workspace/home"]),
            "{v}"
        );
        assert_eq!(v["agent_api_key_set"], true, "{v}");
        assert!(v.get("agent_api_key").is_none(), "{v}");
    }
    // The config calls: model, skills; a runner only on a custom box.
    let (s, v) = d.call(
        Method::PUT,
        &format!("/v2/box/{id}/config/model"),
        Some(json!({"model": "openai/gpt-5.4"})),
    );
    assert!(s == 200 && v["model"] == "openai/gpt-5.4", "{v}");
    let (s, v) = d.post(
        &format!("/v2/box/{id}/config/skills"),
        json!({"skill_id": "owner/repo/skill-name"}),
    );
    assert_eq!(s, 200, "{v}");
    let (_, v) = d.get(&format!("/v2/box/{id}"));
    assert_eq!(v["enabled_skills"][2], "owner/repo/skill-name", "{v}");
    let (s, v) = d.delete(&format!("/v2/box/{id}/config/skills/owner/repo/skill-name"));
    assert_eq!(v["enabled_skills"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(s, 200);
    let (s, v) = d.delete(&format!("/v2/box/{id}/config/skills/owner/repo/skill-name"));
    assert_eq!(s, 404, "{v}");
    let (s, v) = d.call(
        Method::PUT,
        &format!("/v2/box/{id}/config/custom-runner"),
        Some(json!({"custom_runner": {"command": "my-agent"}})),
    );
    assert_eq!(s, 409, "{v}");
    // Agent runs are not built: those routes alone answer 501.
    for path in ["run", "run/stream", "runs", "runs/r1/cancel"] {
        let (s, v) = d.post(&format!("/v2/box/{id}/{path}"), json!({"prompt": "hi"}));
        assert!(
            s == 501 && v["error"].as_str().unwrap().contains("coding agent runs"),
            "{path}: {v}"
        );
    }

    // A custom harness: the runner, the default model.
    let (s, c) = d.post(
        "/v2/box",
        json!({"agent": "custom", "custom_runner": {"command": "my-agent", "args": ["--fast"],
            "protocol": null}}),
    );
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["model"], "custom", "{c}");
    assert_eq!(
        c["custom_runner"],
        json!({"command": "my-agent", "args": ["--fast"], "protocol": "box-sse-v1"})
    );
    let cid = c["id"].as_str().unwrap().to_string();
    let (s, v) = d.call(
        Method::PUT,
        &format!("/v2/box/{cid}/config/custom-runner"),
        Some(json!({"custom_runner": {"command": "/home/boxuser/agent"}})),
    );
    assert!(
        s == 200 && v["custom_runner"]["command"] == "/home/boxuser/agent",
        "{v}"
    );

    // Bad configurations are 400s naming the problem, and create nothing.
    let before = box_ids(&d);
    let long = "k".repeat(8193);
    let many_mcp: Vec<Value> = (0..33)
        .map(|i| json!({"name": format!("s{i}"), "source": "npm", "package_or_url": "p"}))
        .collect();
    let many_skills: Vec<String> = (0..65).map(|i| format!("o/r{i}")).collect();
    for (body, needle) in [
        (
            json!({"agent": "gpt-cli", "model": "m"}),
            "claude-code, codex, opencode",
        ),
        (json!({"agent": "codex"}), "model"),
        (json!({"model": "m"}), "needs agent"),
        (json!({"agent_api_key": "k"}), "needs agent"),
        (json!({"agent": "custom"}), "custom_runner"),
        (
            json!({"agent": "codex", "model": "m", "custom_runner": {"command": "a"}}),
            "custom_runner",
        ),
        (
            json!({"agent": "custom", "custom_runner": {"command": "a"}, "agent_api_key": "k"}),
            "agent_api_key",
        ),
        (
            json!({"agent": "custom", "custom_runner": {"command": "a", "extra": 1}}),
            "extra",
        ),
        (
            json!({"agent": "custom", "custom_runner": {"command": "a", "protocol": "v2"}}),
            "box-sse-v1",
        ),
        (
            json!({"agent": "codex", "model": "m", "agent_api_key": long}),
            "agent_api_key",
        ),
        (json!({"agent": "codex", "model": "m\u{0}"}), "model"),
        (json!({"skills": ["not-a-repo"]}), "owner/repo"),
        (json!({"skills": many_skills}), "64 skills"),
        (json!({"mcp_servers": many_mcp}), "32 MCP servers"),
        (
            json!({"mcp_servers": [{"name": "a", "source": "ftp", "package_or_url": "p"}]}),
            "mcp_servers[0]",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "source": "url", "package_or_url": "mcp.example"}]}),
            "https://",
        ),
        (
            json!({"mcp_servers": [{"name": "a", "source": "npm", "package_or_url": "p"},
                                {"name": "a", "source": "npm", "package_or_url": "q"}]}),
            "two servers",
        ),
    ] {
        let (s, v) = d.post("/v2/box", body.clone());
        assert!(
            s == 400 && v["error"].as_str().unwrap().contains(needle),
            "{body}: {s} {v}"
        );
    }
    assert_eq!(box_ids(&d), before, "a refused create made a box");
}

#[test]
fn misspelled_create_fields_are_refused_by_name_and_create_nothing() {
    let Some(d) = TestDaemon::start() else {
        return;
    };
    for (body, field, meant) in [
        (
            json!({"allowNet": ["example.com"]}),
            "allowNet",
            Some("allow_net"),
        ),
        (
            json!({"networkPolicy": {"mode": "deny-all"}}),
            "networkPolicy",
            Some("network_policy"),
        ),
        (
            json!({"attachHeaders": {"a.example.com": {"X": "v"}}}),
            "attachHeaders",
            Some("attach_headers"),
        ),
        (json!({"allow-net": []}), "allow-net", Some("allow_net")),
        (json!({"name": "x", "netpolicy": {}}), "netpolicy", None),
    ] {
        for path in ["/v2/box", "/v2/box/from-snapshot"] {
            let (s, v) = d.post(path, body.clone());
            let e = v["error"].as_str().unwrap_or_default();
            assert!(
                s == 400 && e.contains(&format!("\"{field}\"")),
                "{path} {body}: {s} {v}"
            );
            if let Some(m) = meant {
                assert!(e.contains(&format!("did you mean \"{m}\"")), "{v}");
            }
        }
    }
    assert_eq!(
        box_ids(&d),
        Vec::<String>::new(),
        "a refused create made a box"
    );
    // The fields as spelt are taken.
    let (s, v) = d.post(
        "/v2/box",
        json!({"allow_net": ["example.com"], "network_policy": {"mode": "deny-all"}}),
    );
    assert!(s == 200 && v["network_policy"]["mode"] == "deny-all", "{v}");
}

#[test]
fn a_box_whose_stored_spec_does_not_parse_is_failed_and_deny_all_after_a_restart() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    let policy = json!({"mode": "custom", "allowed_domains": ["example.com"]});
    let bad_policy = d.create(json!({"name": "bad-policy", "network_policy": policy}));
    let bad_version = d.create(json!({"name": "bad-version", "allow_net": ["example.com"]}));
    let not_json = d.create(json!({"name": "not-json"}));
    let fine = d.create(json!({"name": "fine", "network_policy": policy}));
    d.stop();
    // What an upgrade that tightened the grammar, or a corrupt row, leaves.
    {
        let store = boxd_store::Store::open(d.dir.join("boxd.db")).expect("open the store");
        let spec = |id: &str| store.box_by_id(id).unwrap().unwrap().spec;
        let mut s = spec(&bad_policy);
        s["network_policy"] = json!({"mode": "custom", "allowed_domains": ["exa mple.com"]});
        store.update_box_spec(&bad_policy, &s).unwrap();
        let mut s = spec(&bad_version);
        s["v"] = json!(99);
        store.update_box_spec(&bad_version, &s).unwrap();
        store.update_box_spec(&not_json, &Value::Null).unwrap();
    }
    let rec: Value = serde_json::from_slice(
        &std::fs::read(d.dir.join("pool/boxes").join(&bad_policy).join("box.json")).unwrap(),
    )
    .unwrap();
    let pid = rec["pid"].as_i64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    d.start_again();
    // Its processes were killed (waited for, bounded: the kernel reaps).
    let gone = || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
    };
    for _ in 0..500 {
        if gone() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(gone(), "the failed box's init {pid} still runs");
    for (id, why) in [
        (&bad_policy, "network policy does not parse"),
        (&bad_version, "grammar version 99"),
        (&not_json, "not a JSON object"),
    ] {
        let (s, v) = d.get(&format!("/v2/box/{id}"));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "error", "{v}");
        assert_eq!(v["network_policy"], json!({"mode": "deny-all"}), "{v}");
        assert!(v.get("allow_net").is_none(), "{v}");
        let (_, events) = d.get(&format!("/v2/audit?box={id}&kind=box.failed"));
        let text = events.to_string();
        assert!(
            text.contains(why) && text.contains("denied all network"),
            "{text}"
        );
        // It stays failed: no command runs, no restart, no change writes
        // defaults over what it was; deleting it works.
        let (s, v) = d.post(&format!("/v2/box/{id}/exec"), json!({"command": ["true"]}));
        assert!(s >= 400, "{v}");
        let (s, v) = d.post(&format!("/v2/box/{id}/restart"), json!({}));
        assert!(
            s == 409 && v["error"].as_str().unwrap().contains(why),
            "{s} {v}"
        );
        let (s, v) = d.call(
            Method::PUT,
            &format!("/v2/box/{id}/config/network-policy"),
            Some(json!({"mode": "allow-all"})),
        );
        assert_eq!(s, 409, "{v}");
    }
    assert!(
        d.log().contains("stored spec cannot be read"),
        "{}",
        d.log()
    );
    // A box whose spec parses is untouched.
    let (_, v) = d.get(&format!("/v2/box/{fine}"));
    assert_eq!(v["network_policy"], policy, "{v}");
    assert_ne!(v["status"], "error", "{v}");
    for id in [&bad_policy, &bad_version, &not_json] {
        let (s, v) = d.delete(&format!("/v2/box/{id}"));
        assert_eq!(s, 200, "{v}");
    }
}
