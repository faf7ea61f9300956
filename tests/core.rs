//! The box service driven directly, without any protocol: create, exec
//! (collected and streamed), files, snapshot and restore, pause and
//! resume, restart, delete, TTL, and typed errors for bad arguments and
//! wrong states. New box rules get their tests here; the HTTP tests keep
//! what is specific to the wire format.

mod common;
use boxd_core::{
    AuditQuery, BoxState, Command, CoreError, CreateBox, ExecEvent, ExecSpec, SnapshotSelection,
};
use common::service::TestService;
use futures_util::StreamExt;
use std::time::Duration;

fn sh(script: &str) -> ExecSpec {
    ExecSpec {
        command: Command::Argv(vec!["sh".into(), "-c".into(), script.into()]),
        folder: None,
        timeout_ms: None,
        env: Default::default(),
    }
}

async fn out(t: &TestService, id: &str, script: &str) -> String {
    let o = t.exec(&t.caller, id, sh(script)).await.expect("exec");
    assert_eq!(
        o.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

fn kinds(t: &TestService, box_id: &str) -> Vec<String> {
    let q = AuditQuery {
        box_id: Some(box_id.to_string()),
        limit: Some(1000),
        ..Default::default()
    };
    let events = t.list_audit(&t.caller, &q).expect("audit");
    events.into_iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn a_box_created_through_the_core_runs_commands_streams_them_and_audits_them() {
    let Some(t) = TestService::start() else {
        return;
    };
    let info = t
        .create_box(
            &t.caller,
            CreateBox {
                name: Some("core-box".into()),
                env: [("GREETING".to_string(), "hi".to_string())].into(),
                labels: vec!["core".into()],
                ..Default::default()
            },
        )
        .await
        .expect("create");
    assert_eq!(info.row.state, BoxState::Running);
    let id = info.row.id.clone();
    // By name or id; the env is the box's.
    assert_eq!(out(&t, "core-box", "echo $GREETING").await, "hi\n");
    let code = ExecSpec {
        command: Command::Code {
            language: boxd_core::CodeLanguage::Python,
            code: "print(6*7)".into(),
        },
        ..sh("")
    };
    let o = t.exec(&t.caller, &id, code).await.expect("code");
    assert_eq!((o.exit_code, o.stdout), (0, b"42\n".to_vec()));
    // A command that does not exist ends like it would in a shell.
    let missing = ExecSpec {
        command: Command::Argv(vec!["no-such-binary".into()]),
        ..sh("")
    };
    assert_eq!(
        t.exec(&t.caller, &id, missing)
            .await
            .expect("exec")
            .exit_code,
        127
    );
    // A stream: output in order, then its exit, last.
    let mut events = t
        .exec_stream(&t.caller, &id, sh("echo one; echo two >&2; exit 3"))
        .await
        .expect("stream");
    let mut seen = Vec::new();
    while let Some(e) = events.next().await {
        seen.push(e);
    }
    assert!(
        matches!(seen.last(), Some(ExecEvent::Exit { code: 3, .. })),
        "{seen:?}"
    );
    let of = |stdout: bool| -> Vec<u8> {
        seen.iter()
            .flat_map(|e| match e {
                ExecEvent::Stdout(d) if stdout => d.to_vec(),
                ExecEvent::Stderr(d) if !stdout => d.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    };
    assert_eq!(
        (of(true), of(false)),
        (b"one\n".to_vec(), b"two\n".to_vec())
    );
    let k = kinds(&t, &id);
    assert_eq!(k.iter().filter(|k| *k == "exec").count(), 4, "{k:?}");
    assert_eq!(k.first().map(String::as_str), Some("box.create"));
    t.delete_box(&t.caller, &id).await.expect("delete");
    assert!(matches!(
        t.exec(&t.caller, &id, sh("true")).await,
        Err(CoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn files_round_trip_through_the_core_and_paths_outside_the_root_are_invalid() {
    let Some(t) = TestService::start() else {
        return;
    };
    let id = t.new_box(CreateBox::default()).await;
    let c = &t.caller;
    assert_eq!(
        t.write_file(c, &id, "notes/../a.txt", b"hello world")
            .await
            .expect("write"),
        "/workspace/home/a.txt"
    );
    assert_eq!(
        t.read_file(c, &id, "a.txt", Some(6), Some(5))
            .await
            .expect("read"),
        b"world"
    );
    assert_eq!(
        t.mkdir(c, &id, "dir", false).await.expect("mkdir"),
        "/workspace/home/dir"
    );
    assert!(matches!(
        t.mkdir(c, &id, "dir", false).await,
        Err(CoreError::Conflict(_))
    ));
    assert!(matches!(
        t.mkdir(c, &id, "x/y", false).await,
        Err(CoreError::NotFound(_))
    ));
    t.rename(c, &id, "a.txt", "dir/b.txt")
        .await
        .expect("rename");
    let names: Vec<String> = t
        .list_page(c, &id, Some("dir"), None, None)
        .await
        .expect("list")
        .entries
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(names, vec!["/workspace/home/dir/b.txt".to_string()]);
    assert_eq!(
        t.stat(c, &id, "dir/b.txt", false).await.expect("stat").size,
        11
    );
    assert!(matches!(
        t.remove(c, &id, "dir", false).await,
        Err(CoreError::Invalid(_))
    ));
    t.remove(c, &id, "dir", true).await.expect("remove");
    assert!(matches!(
        t.stat(c, &id, "dir", false).await,
        Err(CoreError::NotFound(_))
    ));
    for bad in ["/../etc/passwd", "", "a\0b"] {
        assert!(
            matches!(
                t.write_file(c, &id, bad, b"x").await,
                Err(CoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    // Download: the file's bytes.
    t.write_file(c, &id, "d.bin", &[1, 2, 3])
        .await
        .expect("write");
    let mut dl = t.download(c, &id, "d.bin").await.expect("download");
    let mut got = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut dl.body, &mut got)
        .await
        .expect("read the download");
    assert_eq!((dl.is_dir, got), (false, vec![1, 2, 3]));
    let k = kinds(&t, &id);
    for kind in ["file.write", "file.mkdir", "file.rename", "file.remove"] {
        assert!(k.iter().any(|x| x == kind), "{kind} not audited: {k:?}");
    }
}

#[tokio::test]
async fn a_paused_box_resumes_for_a_command_but_a_bad_call_leaves_it_paused() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let id = t.new_box(CreateBox::default()).await;
    assert_eq!(
        t.pause(c, &id).await.expect("pause").row.state,
        BoxState::Paused
    );
    // Pausing twice does nothing.
    assert_eq!(
        t.pause(c, &id).await.expect("pause").row.state,
        BoxState::Paused
    );
    let empty = ExecSpec {
        command: Command::Argv(Vec::new()),
        ..sh("")
    };
    assert!(matches!(
        t.exec(c, &id, empty).await,
        Err(CoreError::Invalid(_))
    ));
    assert!(matches!(
        t.write_file(c, &id, "/../x", b"x").await,
        Err(CoreError::Invalid(_))
    ));
    assert!(matches!(
        t.list_page(c, &id, Some("/.."), None, None).await,
        Err(CoreError::Invalid(_))
    ));
    assert_eq!(t.get_box(c, &id).expect("get").row.state, BoxState::Paused);
    assert!(!kinds(&t, &id).iter().any(|k| k == "box.resume"));
    // A good call resumes it first.
    assert_eq!(out(&t, &id, "echo up").await, "up\n");
    assert_eq!(t.get_box(c, &id).expect("get").row.state, BoxState::Running);
    assert!(kinds(&t, &id).iter().any(|k| k == "box.resume"));
}

#[tokio::test]
async fn a_snapshot_restores_into_a_new_box_and_a_bad_selection_deletes_nothing() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let src = t.new_box(CreateBox::default()).await;
    let other = t.new_box(CreateBox::default()).await;
    out(&t, &src, "echo kept > f").await;
    let snap = t
        .create_snapshot(c, &src, Some("s1".into()))
        .await
        .expect("snapshot");
    assert_eq!(snap.state, "ready");
    assert!(snap.created_at > 0);
    let restored = t
        .new_box(CreateBox {
            snapshot: Some("s1".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(out(&t, &restored, "cat f").await, "kept\n");
    // The restored box is independent of the one it came from.
    out(&t, &restored, "echo changed > f").await;
    assert_eq!(out(&t, &src, "cat f").await, "kept\n");
    assert!(matches!(
        t.delete_snapshots(c, &SnapshotSelection::Ids(Vec::new())),
        Err(CoreError::Invalid(_))
    ));
    assert!(matches!(
        t.delete_snapshot(c, Some(&other), &snap.id),
        Err(CoreError::NotFound(_))
    ));
    assert_eq!(t.list_snapshots(c, None).expect("list").len(), 1);
    let twice = SnapshotSelection::Ids(vec![snap.id.clone(), "s1".into()]);
    assert_eq!(t.delete_snapshots(c, &twice).expect("delete"), 1);
    assert!(t.list_snapshots(c, None).expect("list").is_empty());
    // The box using it keeps working.
    assert_eq!(out(&t, &restored, "cat f").await, "changed\n");
}

#[tokio::test]
async fn a_restarted_box_keeps_its_files_and_an_expired_box_is_deleted_by_the_sweeper() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let id = t.new_box(CreateBox::default()).await;
    out(&t, &id, "echo mine > f; sleep 1000 >/dev/null 2>&1 &").await;
    let info = t.restart(c, &id).await.expect("restart");
    assert_eq!(info.row.state, BoxState::Running);
    assert_eq!(
        out(&t, &id, "cat f; pgrep sleep || echo none").await,
        "mine\nnone\n"
    );
    let short = t
        .new_box(CreateBox {
            ttl_secs: Some(1),
            ..Default::default()
        })
        .await;
    let expires = t
        .get_box(c, &short)
        .expect("get")
        .meta
        .expires_at
        .expect("expiry");
    // Bounded: the box is gone within 20 sweeps after its expiry.
    let mut gone = false;
    for _ in 0..200 {
        t.sweep().await;
        if matches!(t.get_box(c, &short), Err(CoreError::NotFound(_))) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "box {short} (expires at {expires}) was not deleted");
    assert!(boxd_core::now_ms() >= expires);
}

#[tokio::test]
async fn bad_arguments_and_wrong_states_are_typed_errors_and_change_nothing() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let bad = [
        CreateBox {
            name: Some("..".into()),
            ..Default::default()
        },
        CreateBox {
            name: Some("snapshots".into()),
            ..Default::default()
        },
        CreateBox {
            labels: vec!["bad label".into()],
            ..Default::default()
        },
        CreateBox {
            ttl_secs: Some(0),
            ..Default::default()
        },
        CreateBox {
            init_command: Some("  ".into()),
            ..Default::default()
        },
        CreateBox {
            env: [("LD_PRELOAD".to_string(), "x".to_string())].into(),
            ..Default::default()
        },
        CreateBox {
            runtime: Some("no-such-image".into()),
            ..Default::default()
        },
        // Secrets need networking, which this service has not.
        CreateBox {
            secrets: Some(
                serde_json::json!({"TOKEN": {"hosts": ["api.example.com"], "value": "v"}}),
            ),
            ..Default::default()
        },
    ];
    for req in bad {
        let what = format!("{req:?}");
        match t.create_box(c, req).await {
            Err(CoreError::Invalid(m)) => assert!(!m.is_empty()),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(t
        .list_boxes(c, &Default::default())
        .expect("list")
        .is_empty());
    assert!(matches!(
        t.create_box(
            c,
            CreateBox {
                snapshot: Some("missing".into()),
                ..Default::default()
            }
        )
        .await,
        Err(CoreError::NotFound(_))
    ));
    let taken = || CreateBox {
        name: Some("taken".into()),
        ..Default::default()
    };
    let id = t.new_box(taken()).await;
    assert!(matches!(
        t.create_box(c, taken()).await,
        Err(CoreError::Conflict(_))
    ));
    t.add_label(c, &id, "l").expect("label");
    assert!(matches!(
        t.add_label(c, &id, "l"),
        Err(CoreError::Conflict(_))
    ));
    assert!(matches!(
        t.remove_label(c, &id, "nope"),
        Err(CoreError::NotFound(_))
    ));
    // Another team sees nothing of it.
    let stranger = t.other_team();
    assert!(matches!(
        t.get_box(&stranger, &id),
        Err(CoreError::NotFound(_))
    ));
    assert!(matches!(
        t.delete_box(&stranger, "taken").await,
        Err(CoreError::NotFound(_))
    ));
    // Bulk delete: all found first, or nothing happens.
    assert!(matches!(
        t.delete_boxes(c, &[id.clone(), "missing".into()]).await,
        Err(CoreError::NotFound(_))
    ));
    assert_eq!(t.get_box(c, &id).expect("still there").row.id, id);
    assert_eq!(
        t.delete_boxes(c, &[id.clone(), "taken".into()])
            .await
            .expect("delete"),
        vec![id.clone()]
    );
    assert!(matches!(t.pause(c, &id).await, Err(CoreError::NotFound(_))));
}

#[tokio::test]
async fn a_pause_waits_for_the_calls_in_flight_and_never_freezes_under_them() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let id = t.new_box(CreateBox::default()).await;
    // A stream in flight: the pause lands while it runs, and the stream
    // still ends on its own (nothing froze under it).
    let mut events = t
        .exec_stream(c, &id, sh("sleep 1; echo done"))
        .await
        .expect("stream");
    let svc = t.svc.clone();
    let (caller, box_id) = (c.clone(), id.clone());
    let pause = tokio::spawn(async move { svc.pause(&caller, &box_id).await });
    let mut last = None;
    let hang = Duration::from_secs(60);
    while let Some(e) = tokio::time::timeout(hang, events.next())
        .await
        .expect("the stream hung")
    {
        last = Some(e);
    }
    assert!(
        matches!(last, Some(ExecEvent::Exit { code: 0, .. })),
        "{last:?}"
    );
    let paused = tokio::time::timeout(hang, pause)
        .await
        .expect("the pause hung")
        .expect("join")
        .expect("pause");
    assert_eq!(paused.row.state, BoxState::Paused);
    // A big write and a pause at once: both finish, and the file is whole.
    let data = vec![7u8; 12 << 20];
    let svc = t.svc.clone();
    let (caller, box_id) = (c.clone(), id.clone());
    let write = tokio::spawn(async move { svc.write_file(&caller, &box_id, "big", &data).await });
    let svc = t.svc.clone();
    let (caller, box_id) = (c.clone(), id.clone());
    let pause = tokio::spawn(async move { svc.pause(&caller, &box_id).await });
    let written = tokio::time::timeout(hang, write)
        .await
        .expect("the write hung");
    written.expect("join").expect("write");
    let paused = tokio::time::timeout(hang, pause)
        .await
        .expect("the pause hung");
    assert!(paused.expect("join").is_ok());
    assert_eq!(
        out(&t, &id, "wc -c < big").await.trim(),
        (12 << 20).to_string()
    );
}

#[tokio::test]
async fn a_stream_cut_by_a_delete_says_the_box_was_deleted() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let id = t.new_box(CreateBox::default()).await;
    let mut events = t
        .exec_stream(c, &id, sh("echo started; sleep 600"))
        .await
        .expect("stream");
    let first = events.next().await;
    assert!(matches!(first, Some(ExecEvent::Stdout(_))), "{first:?}");
    t.delete_box(c, &id).await.expect("delete");
    let mut last = None;
    let hang = Duration::from_secs(60);
    while let Some(e) = tokio::time::timeout(hang, events.next())
        .await
        .expect("the stream hung")
    {
        last = Some(e);
    }
    match last {
        Some(ExecEvent::Error(m)) => assert!(m.contains("was deleted"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_box_whose_agent_dies_is_marked_failed_at_once_and_a_restart_recovers_it() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let sweeper = tokio::spawn(t.svc.clone().sweep_forever());
    let id = t.new_box(CreateBox::default()).await;
    out(&t, &id, "echo mine > f").await;
    let q = AuditQuery {
        box_id: Some(id.clone()),
        ..Default::default()
    };
    let mut follow = t.follow_audit(c, &q);
    let agent = t.live(&id).expect("live").handle.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the agent from the host");
    // Noticed without any call on the box: the failure is audited with
    // its reason, and the box reads `failed`.
    let failed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = follow.next().await {
            let ev = ev.expect("audit event");
            if ev.kind == "box.failed" {
                return ev;
            }
        }
        panic!("the audit follow ended");
    })
    .await
    .expect("no box.failed event after the agent died");
    assert!(
        failed.data.to_string().contains("boxd-agent"),
        "{:?}",
        failed.data
    );
    assert_eq!(t.get_box(c, &id).expect("get").row.state, BoxState::Failed);
    let info = t.restart(c, &id).await.expect("restart");
    assert_eq!(info.row.state, BoxState::Running);
    assert_eq!(out(&t, &id, "cat f").await, "mine\n");
    sweeper.abort();
}

#[tokio::test]
async fn calls_during_a_restart_wait_for_it_and_never_record_the_box_failed() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let id = t.new_box(CreateBox::default()).await;
    out(&t, &id, "echo mine > f").await;
    for round in 0..5 {
        let restart = t.restart(c, &id);
        let second = t.restart(c, &id);
        let execs = futures_util::future::join_all((0..8).map(|_| t.exec(c, &id, sh("cat f"))));
        let (first, second, execs) = tokio::join!(restart, second, execs);
        first.expect("restart");
        second.expect("a second restart at once takes its turn");
        // A command the restart killed says so; every other one ran on
        // the box, before or after.
        for e in execs {
            match e {
                Ok(o) => assert_eq!(o.stdout, b"mine\n"),
                Err(CoreError::Conflict(m))
                    if m.contains("was restarted while the command ran") => {}
                Err(e) => panic!("round {round}: an exec during a restart: {e:?}"),
            }
        }
    }
    let k = kinds(&t, &id);
    assert!(!k.contains(&"box.failed".to_string()), "{k:?}");
    assert_eq!(
        k.iter().filter(|k| *k == "box.restart").count(),
        10,
        "{k:?}"
    );
    assert_eq!(t.get_box(c, &id).expect("get").row.state, BoxState::Running);
}

#[tokio::test]
async fn an_agent_box_records_its_configuration_and_seals_its_key_outside_the_spec() {
    let Some(t) = TestService::start() else {
        return;
    };
    let key = "sk-core-AGENTKEY-5a7c9e1b";
    let id = t
        .new_box(CreateBox {
            agent: boxd_core::AgentRequest {
                agent: Some("opencode".into()),
                model: Some("opencode/grok".into()),
                api_key: Some(boxd_core::WriteOnly(key.into())),
                skills: vec!["upstash/qstash-js".into()],
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    let info = t.get_box(&t.caller, &id).expect("get");
    assert_eq!(info.meta.agent.agent.as_deref(), Some("opencode"));
    assert!(info.meta.agent.has_api_key);
    assert_eq!(
        info.meta.agent.skills,
        vec!["upstash/qstash-js".to_string()]
    );
    // The spec records the configuration, never the key; the key is
    // sealed in the store and opens to what was sent.
    assert!(
        !info.row.spec.to_string().contains(key),
        "{}",
        info.row.spec
    );
    assert_eq!(
        info.row.spec["v"], 1,
        "the spec carries its grammar version"
    );
    let sealed = t
        .store
        .box_agent_key(&id)
        .expect("read")
        .expect("a key row");
    let opened = sealed.open(t.secrets.keys()).expect("opens");
    assert_eq!(opened.as_slice(), key.as_bytes());
    assert!(!out(&t, &id, "env").await.contains(key));
    // A bad configuration is an invalid argument that leaves no box.
    let before = t.list_boxes(&t.caller, &Default::default()).unwrap().len();
    let e = t
        .create_box(
            &t.caller,
            CreateBox {
                agent: boxd_core::AgentRequest {
                    agent: Some("custom".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CoreError::Invalid(_)), "{e:?}");
    assert_eq!(
        t.list_boxes(&t.caller, &Default::default()).unwrap().len(),
        before
    );
    // Deleting the box takes its sealed key with it.
    t.delete_box(&t.caller, &id).await.expect("delete");
    assert!(t.store.box_agent_key(&id).expect("read").is_none());
}

/// The processes of an exec through the service: a timed-out exec leaves
/// nothing (however its children detached), a cancelled stream neither
/// (audited as cancelled), and a finished exec's background process is
/// listed with its exec id and the key, named in the exec's audit event,
/// and killed with a `process.kill` event.
#[tokio::test]
async fn an_execs_processes_are_tied_to_it_ended_with_it_or_kept_listed_and_killable() {
    let Some(t) = TestService::start() else {
        return;
    };
    let info = t
        .create_box(&t.caller, CreateBox::default())
        .await
        .expect("create");
    let id = info.row.id.clone();
    let detached =
        "a=$((4400+1)); setsid sleep $a & (nohup sh -c \"sleep $a\" >/dev/null 2>&1 &); \
                    until [ $(ps -eo args | grep -c \"^slee[p] $a\") -ge 2 ]; do sleep 0.01; done; \
                    echo ready; sleep $((4400))";
    let sleeping = |list: &[boxd_core::BoxProcess]| -> Vec<String> {
        list.iter()
            .filter(|p| p.state != "Z" && p.command.contains("sleep 440"))
            .map(|p| p.command.clone())
            .collect()
    };
    let spec = ExecSpec {
        timeout_ms: Some(3000),
        ..sh(detached)
    };
    let o = t.exec(&t.caller, &id, spec).await.expect("exec");
    assert_eq!((o.timed_out, o.stdout.as_slice()), (true, &b"ready\n"[..]));
    let list = t.processes(&t.caller, &id).await.expect("list");
    assert_eq!(sleeping(&list), Vec::<String>::new());

    // A stream dropped by its reader.
    let mut events = t
        .exec_stream(&t.caller, &id, sh(detached))
        .await
        .expect("stream");
    assert!(
        matches!(events.next().await, Some(ExecEvent::Stdout(d)) if d.as_ref() == b"ready\n"),
        "no ready line"
    );
    drop(events);
    let mut left = vec!["?".to_string()];
    for _ in 0..500 {
        left = sleeping(&t.processes(&t.caller, &id).await.expect("list"));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, Vec::<String>::new(), "outlived the dropped stream");

    // A finished exec's background process.
    let o = t
        .exec(&t.caller, &id, sh("sleep 4500 & echo started"))
        .await
        .expect("exec");
    assert_eq!(o.exit_code, 0);
    let list = t.processes(&t.caller, &id).await.expect("list");
    let bg = list
        .iter()
        .find(|p| p.command == "sleep 4500")
        .unwrap_or_else(|| panic!("not listed: {list:?}"));
    assert_eq!(bg.exec_id.as_deref(), Some(o.exec_id.as_str()));
    assert_eq!(bg.started_by.as_deref(), Some(t.caller.key_id.as_str()));
    assert_eq!(o.left_running, vec![bg.pid]);
    assert!(list.iter().all(|p| p.pid != 1), "boxd's own are not listed");
    assert!(matches!(
        t.kill_process(&t.caller, &id, 1, 9).await,
        Err(CoreError::Forbidden(_))
    ));
    assert!(matches!(
        t.kill_process(&t.caller, &id, bg.pid, 0).await,
        Err(CoreError::Invalid(_))
    ));
    let killed = t
        .kill_process(&t.caller, &id, bg.pid, 15)
        .await
        .expect("kill");
    assert_eq!(killed.exec_id.as_deref(), Some(o.exec_id.as_str()));

    let q = AuditQuery {
        box_id: Some(id.clone()),
        limit: Some(1000),
        ..Default::default()
    };
    let events = t.list_audit(&t.caller, &q).expect("audit");
    let exec = events
        .iter()
        .find(|e| e.kind == "exec" && e.data["exec_id"] == o.exec_id.as_str())
        .expect("the exec's event");
    assert_eq!(
        exec.data["left_running"][0]["pid"], bg.pid,
        "{:?}",
        exec.data
    );
    assert!(events.iter().any(|e| e.kind == "exec"
        && e.data["kind"] == "exec_stream"
        && e.data["cancelled"] == true));
    assert!(events.iter().any(|e| e.kind == "process.kill"
        && e.data["pid"] == bg.pid
        && e.data["exec_id"] == o.exec_id.as_str()));
}

#[tokio::test]
async fn an_init_commands_processes_are_listed_under_its_exec_id() {
    let Some(t) = TestService::start() else {
        return;
    };
    let c = &t.caller;
    let id = t
        .new_box(CreateBox {
            init_command: Some("exec sleep 4242".into()),
            ..Default::default()
        })
        .await;
    // The init command starts in the background: wait (bounded) for it.
    let mut found = None;
    for _ in 0..200 {
        let list = t.processes(c, &id).await.expect("processes");
        if let Some(p) = list.into_iter().find(|p| p.command.contains("sleep 4242")) {
            found = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let p = found.expect("the init command's process is listed");
    assert!(
        p.exec_id.as_deref().is_some_and(|e| e.starts_with("exec-")),
        "{p:?}"
    );
}
