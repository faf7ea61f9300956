//! Snapshots and restore through the API: a snapshot keeps a box's files
//! (deletions included) and env and outlives the box; restored boxes are
//! independent of each other and of the snapshot; many boxes fork from
//! one snapshot at once; a snapshot in use is hidden on delete and freed
//! with its last box; a daemon killed mid-capture lists nothing half done.

mod common;
use common::daemon::TestDaemon;
use serde_json::{json, Value};

fn snap(d: &TestDaemon, box_id: &str, name: &str) -> Value {
    let (s, v) = d.post(
        &format!("/v2/box/{box_id}/snapshots"),
        json!({ "name": name }),
    );
    assert_eq!(s, 200, "snapshot: {v}");
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(v["box_id"], box_id);
    v
}

fn restore(d: &TestDaemon, snapshot: &str) -> String {
    let (s, v) = d.post("/v2/box/from-snapshot", json!({ "snapshot_id": snapshot }));
    assert_eq!(s, 200, "from-snapshot: {v}");
    assert_eq!(v["status"], "idle", "{v}");
    v["id"].as_str().unwrap().to_string()
}

fn snapshot_ids(d: &TestDaemon) -> Vec<String> {
    let (s, v) = d.get("/v2/box/snapshots");
    assert_eq!(s, 200, "{v}");
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn snapshot_dirs(d: &TestDaemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.dir.join("pool/snapshots"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn snapshot_restores_files_env_and_deletions_into_independent_boxes() {
    let Some(d) = TestDaemon::start() else { return };
    let src = d.create(json!({"name": "src", "env_vars": {"GREETING": "hello"}}));
    let (code, _, err) = d.sh(
        &src,
        "set -e; mkdir -p tree/a/b && echo one > tree/a/b/f && echo two > tree/g && \
         ln -s a/b/f tree/link && chmod 751 tree/a && ln tree/g tree/hard && \
         mkdir -p /opt/tool && echo bin > /opt/tool/x && \
         rm /etc/nsswitch.conf /usr/bin/yes && \
         rm -r /usr/share/doc/sed && mkdir /usr/share/doc/sed && touch /usr/share/doc/sed/only && \
         chown 1000:1000 tree/g",
    );
    // Image files were deleted (whiteouts in the root and /usr overlays)
    // and an image dir replaced (an opaque dir).
    assert_eq!(code, 0, "{err}");
    let s = snap(&d, &src, "base");
    assert!(s["size_bytes"].as_i64().unwrap() > 0, "{s}");
    let sid = s["id"].as_str().unwrap().to_string();
    // The source box keeps running after the capture (it was thawed).
    assert_eq!(d.sh(&src, "echo alive").1, "alive\n");
    // Snapshots outlive their box.
    assert_eq!(d.delete(&format!("/v2/box/{src}")).0, 200);
    assert_eq!(snapshot_ids(&d), vec![sid.clone()]);

    let a = restore(&d, &sid);
    let b = restore(&d, "base"); // by name too
    let check = "cat tree/a/b/f tree/g tree/link /opt/tool/x; echo $GREETING; \
                 stat -c %a tree/a; stat -c %u:%g tree/g; stat -c %h tree/hard; \
                 test -e /etc/nsswitch.conf && echo etc-back; \
                 test -e /usr/bin/yes && echo usr-back; ls /usr/share/doc/sed";
    let want = "one\ntwo\none\nbin\nhello\n751\n1000:1000\n2\nonly\n";
    for id in [&a, &b] {
        let (code, out, err) = d.sh(id, check);
        assert_eq!((code, out.as_str()), (0, want), "box {id}: {err}");
    }
    // Changes in one box appear neither in the other nor in the snapshot.
    d.sh(
        &a,
        "echo changed > tree/g; rm tree/a/b/f; echo new > tree/new",
    );
    assert_eq!(d.sh(&b, "cat tree/g; ls tree/a/b").1, "two\nf\n");
    let c = restore(&d, &sid);
    assert_eq!(
        d.sh(&c, "cat tree/g tree/a/b/f; test -e tree/new || echo none")
            .1,
        "two\none\nnone\n"
    );
    // The restored box's env and config came from the snapshot; a create
    // field wins over it.
    let (s, v) = d.post(
        "/v2/box/from-snapshot",
        json!({"snapshot_id": sid, "env_vars": {"GREETING": "bye"}, "name": "d"}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.sh("d", "echo $GREETING").1, "bye\n");

    // A snapshot of a restored box stacks on its parent.
    d.sh(&a, "echo second > tree/second");
    let s2 = snap(&d, &a, "second");
    let e = restore(&d, s2["id"].as_str().unwrap());
    assert_eq!(
        d.sh(
            &e,
            "cat tree/g tree/second tree/new; test -e tree/a/b/f || echo deleted"
        )
        .1,
        "changed\nsecond\nnew\ndeleted\n"
    );
    // Names are unique per team.
    let (s, v) = d.post(&format!("/v2/box/{b}/snapshots"), json!({"name": "base"}));
    assert_eq!(s, 409, "{v}");
    assert_eq!(d.get("/v2/box/snapshots/nope").0, 404);
    assert_eq!(
        d.post("/v2/box/from-snapshot", json!({"snapshot_id": "nope"}))
            .0,
        404
    );
}

#[test]
fn twenty_boxes_fork_from_one_snapshot_at_once() {
    let Some(d) = TestDaemon::start() else { return };
    let src = d.create(json!({}));
    d.sh(&src, "echo shared > /workspace/home/f");
    let sid = snap(&d, &src, "fork")["id"].as_str().unwrap().to_string();
    let d = &d;
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20).map(|_| s.spawn(|| restore(d, &sid))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, id) in ids.iter().enumerate() {
        let (code, out, _) = d.sh(id, &format!("cat f; echo {i} > mine; cat mine"));
        assert_eq!((code, out), (0, format!("shared\n{i}\n")), "box {id}");
    }
    for id in &ids {
        assert_eq!(d.delete(&format!("/v2/box/{id}")).0, 200);
    }
}

#[test]
fn a_snapshot_in_use_is_hidden_on_delete_and_freed_with_its_last_box() {
    let Some(d) = TestDaemon::start() else { return };
    let src = d.create(json!({
        "secrets": {"SNAP_TOKEN": {"hosts": ["api.example.com"], "value": "s3cret-value"}},
        "attach_headers": {"api.example.com": {"X-Key": "header-value"}},
    }));
    assert!(d
        .sh(&src, "echo $SNAP_TOKEN")
        .1
        .starts_with("boxd_placeholder_"));
    d.sh(&src, "echo kept > f");
    let sid = snap(&d, &src, "held")["id"].as_str().unwrap().to_string();
    // Layers are reachable by host root only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.dir.join("pool/snapshots"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let user = restore(&d, &sid);
    // Secrets and attach headers are not carried over.
    assert_eq!(d.sh(&user, "echo ${SNAP_TOKEN-unset}").1, "unset\n");
    let (_, v) = d.get(&format!("/v2/box/{user}"));
    assert!(
        v.get("secrets").is_none() && v.get("attach_headers").is_none(),
        "{v}"
    );
    let (s, v) = d.delete(&format!("/v2/box/{src}/snapshots/{sid}"));
    assert_eq!(s, 200, "{v}");
    // Gone from the lists and not restorable, but the box using it works.
    assert!(snapshot_ids(&d).is_empty());
    assert!(d.get(&format!("/v2/box/{src}/snapshots")).1["snapshots"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        d.post("/v2/box/from-snapshot", json!({"snapshot_id": sid}))
            .0,
        404
    );
    assert_eq!(snapshot_dirs(&d), vec![sid.clone()]);
    assert_eq!(d.sh(&user, "cat f").1, "kept\n");
    // Its name is free again.
    snap(&d, &src, "held");
    // The last box using it goes: its files go too.
    assert_eq!(d.delete(&format!("/v2/box/{user}")).0, 200);
    assert!(!snapshot_dirs(&d).contains(&sid), "{:?}", snapshot_dirs(&d));
    // Bulk delete: {} deletes all (TS), unused ones are freed at once.
    let (s, v) = d.call(
        reqwest::Method::DELETE,
        "/v2/box/snapshots",
        Some(json!({})),
    );
    assert_eq!((s, v["deleted"].as_i64()), (200, Some(1)), "{v}");
    assert!(snapshot_ids(&d).is_empty());
    assert!(snapshot_dirs(&d).is_empty(), "{:?}", snapshot_dirs(&d));
}

#[test]
fn kill_9_during_a_snapshot_lists_nothing_half_done() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    let src = d.create(json!({}));
    // Enough data that the capture takes a moment.
    let (code, _, err) = d.sh(
        &src,
        "for i in $(seq 1 400); do head -c 262144 /dev/urandom > f$i; done",
    );
    assert_eq!(code, 0, "{err}");
    let url = format!("{}/v2/box/{src}/snapshots", d.url);
    let key = d.key.clone();
    let taker = std::thread::spawn(move || {
        let _ = reqwest::blocking::Client::new()
            .post(url)
            .header("X-Box-Api-Key", key)
            .json(&json!({"name": "cut"}))
            .send();
    });
    // Kill as soon as the capture has started writing.
    for _ in 0..2000 {
        let started = std::fs::read_dir(d.dir.join("pool/snapshots"))
            .map(|rd| rd.flatten().count() > 0)
            .unwrap_or(false);
        if started {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    d.kill9();
    let _ = taker.join();
    d.start_again();
    // Whatever the moment: a listed snapshot is complete and restorable,
    // an unlisted one left no files, and the box is not left frozen.
    let listed = snapshot_ids(&d);
    assert_eq!(snapshot_dirs(&d), {
        let mut l = listed.clone();
        l.sort();
        l
    });
    for sid in &listed {
        let id = restore(&d, sid);
        assert_eq!(d.sh(&id, "ls | wc -l").1, "400\n");
    }
    // The source box may still be frozen by the dead daemon's capture:
    // a new snapshot must work and thaw it.
    let s = snap(&d, &src, "after");
    assert!(s["size_bytes"].as_i64().unwrap() >= 400 * 262144);
    assert_eq!(d.sh(&src, "echo ok").1, "ok\n");
}

#[test]
fn acl_and_capability_ids_are_box_relative_in_a_restored_box() {
    let Some(d) = TestDaemon::start() else { return };
    for tool in ["setfacl", "getfacl", "setcap", "getcap", "setpriv"] {
        assert!(
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is missing on the host (boxes reuse its /usr): install acl, libcap2-bin and util-linux (scripts/test does)"
        );
    }
    let src = d.create(json!({}));
    // Box root grants user 1234 and group 2345 access by ACL (and a
    // default ACL on a folder), and gives a program CAP_NET_RAW (set in
    // the box's user namespace, it is stored as a v3 capability whose root
    // id is the box root's host id).
    let (code, _, err) = d.sh(
        &src,
        "set -e; echo secret > acl-file && chmod 600 acl-file && \
         setfacl -m u:1234:rw,g:2345:r acl-file && \
         mkdir acl-dir && setfacl -d -m u:1234:rwx acl-dir && \
         cp /usr/bin/true captrue && setcap cap_net_raw+ep captrue",
    );
    assert_eq!(code, 0, "{err}");
    // (Running captrue is no check: boxes run with no_new_privs and
    // without CAP_NET_RAW in their bounding set, so the exec is refused.)
    let check = "getfacl -n --omit-header acl-file acl-dir; getcap captrue; \
                 setpriv --reuid=1234 --regid=1234 --clear-groups cat acl-file";
    let (code, before, err) = d.sh(&src, check);
    assert_eq!(code, 0, "in the source box: {before}{err}");
    for want in [
        "user:1234:rw-",
        "group:2345:r--",
        "default:user:1234:rwx",
        "captrue cap_net_raw=ep",
        "secret\n",
    ] {
        assert!(before.contains(want), "source box lacks {want:?}: {before}");
    }
    let sid = snap(&d, &src, "xattrs")["id"].as_str().unwrap().to_string();
    let restored = restore(&d, &sid);
    // The restored box shows the same ids and the capability still works:
    // the layer holds box-relative ids, not the source box's host ids.
    let (code, after, err) = d.sh(&restored, check);
    assert_eq!(
        (code, after.as_str()),
        (0, before.as_str()),
        "restored box: {err}"
    );
}

#[test]
fn a_bulk_delete_never_reads_a_bad_selection_as_all() {
    use reqwest::Method;
    let Some(d) = TestDaemon::start() else { return };
    let src = d.create(json!({}));
    let other = d.create(json!({}));
    let s1 = snap(&d, &src, "keep-1")["id"].as_str().unwrap().to_string();
    let s2 = snap(&d, &src, "keep-2")["id"].as_str().unwrap().to_string();
    let mut both = vec![s1.clone(), s2.clone()];
    both.sort();
    let listed = || {
        let mut v = snapshot_ids(&d);
        v.sort();
        v
    };
    // An empty or null list, a misspelt key, no body at all, ids beside
    // ?all=true: each is a 400 naming the problem, and nothing is deleted.
    for (path, body) in [
        ("/v2/box/snapshots", Some(json!({"ids": []}))),
        ("/v2/box/snapshots", Some(json!({"ids": null}))),
        ("/v2/box/snapshots", Some(json!({"snapshot_ids": [s1]}))),
        ("/v2/box/snapshots", None),
        ("/v2/box/snapshots?all=false", Some(json!({}))),
        ("/v2/box/snapshots?all=true", Some(json!({"ids": [s1]}))),
    ] {
        let (s, v) = d.call(Method::DELETE, path, body.clone());
        assert_eq!(s, 400, "{path} {body:?}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert_eq!(listed(), both, "{path} {body:?} deleted something");
    }
    // A snapshot is deleted through its own box only (by id or name).
    let (s, v) = d.delete(&format!("/v2/box/{other}/snapshots/{s1}"));
    assert_eq!(s, 404, "{v}");
    assert_eq!(listed(), both);
    // One id twice (once by name) is one deletion.
    let (s, v) = d.call(
        Method::DELETE,
        "/v2/box/snapshots",
        Some(json!({"ids": [s1, s1, "keep-1"]})),
    );
    assert_eq!((s, v["deleted"].as_i64()), (200, Some(1)), "{v}");
    assert_eq!(listed(), vec![s2.clone()]);
    // The Python SDK's delete-all form.
    let (s, v) = d.call(
        Method::DELETE,
        "/v2/box/snapshots?all=true",
        Some(json!({})),
    );
    assert_eq!((s, v["deleted"].as_i64()), (200, Some(1)), "{v}");
    assert!(listed().is_empty());
    // Bulk box delete: a box named twice is deleted once and reported once;
    // an unknown key is refused before anything is deleted.
    let (s, v) = d.call(Method::DELETE, "/v2/box", Some(json!({"box_ids": [other]})));
    assert!(
        s == 422 && v["error"].as_str().unwrap().contains("box_ids"),
        "{s} {v}"
    );
    let (s, v) = d.call(Method::DELETE, "/v2/box", Some(json!({"ids": [src, src]})));
    assert_eq!((s, v["deleted"].clone()), (200, json!([src])), "{v}");
    assert_eq!(d.delete(&format!("/v2/box/{other}")).0, 200);
}
