//! Volumes and metadata against a real `boxd serve`: a volume shared
//! between boxes, read-only mounts, ownership by box root in every box,
//! volumes outliving boxes, deletion refused while in use, bad mount specs;
//! and the metadata filter of the box list.
//!
//! Every daemon (its boxes, volumes and data dir) is removed on drop, so a
//! failing assertion leaves nothing behind.

mod common;

use common::daemon::{json_of, TestDaemon};
use reqwest::Method;
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;

fn ids(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .expect("a bare JSON array")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect();
    out.sort();
    out
}

fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[test]
fn a_volume_is_shared_read_only_where_asked_owned_by_box_root_and_outlives_its_boxes() {
    let Some(mut d) = TestDaemon::start() else {
        return;
    };
    let (s, vol) = d.post("/v2/volumes", json!({"name": "data", "size_mib": 64}));
    assert_eq!(s, 200, "{vol}");
    let vol_id = vol["id"].as_str().expect("volume id").to_string();
    assert_eq!(vol["name"], "data");
    assert_eq!(vol["size_mib"], 64);
    let host_dir = d.dir.join("pool/volumes").join(&vol_id);
    assert!(host_dir.is_dir(), "{} is missing", host_dir.display());
    let (s, v) = d.post("/v2/volumes", json!({"name": "data"}));
    assert_eq!(s, 409, "{v}");

    let a = d.create(json!({"name": "a", "volumes": [{"name": "data", "path": "/data"}]}));
    let b = d.create(json!({"name": "b", "volumes": [{"name": "data", "path": "/mnt/shared"}]}));
    let c = d.create(json!({"name": "c",
        "volumes": [{"name": "data", "path": "/ro", "read_only": true}]}));
    let (_, got) = d.get(&format!("/v2/box/{a}"));
    assert_eq!(
        got["volumes"],
        json!([{"name": "data", "path": "/data", "read_only": false}]),
        "{got}"
    );

    // Box root writes in A: box root owns it in A and in B (their host
    // id ranges differ), B's writes show up in A.
    let (code, out, err) = d.sh(
        &a,
        "echo hello > /data/f && mkdir /data/sub && stat -c %u:%g /data /data/f /data/sub",
    );
    assert_eq!((code, out.as_str()), (0, "0:0\n0:0\n0:0\n"), "{err}");
    let (code, out, err) = d.sh(
        &b,
        "cat /mnt/shared/f && stat -c %u:%g /mnt/shared/f /mnt/shared/sub && echo from-b > /mnt/shared/sub/g",
    );
    assert_eq!((code, out.as_str()), (0, "hello\n0:0\n0:0\n"), "{err}");
    let (code, out, err) = d.sh(&a, "cat /data/sub/g && stat -c %u:%g /data/sub/g");
    assert_eq!((code, out.as_str()), (0, "from-b\n0:0\n"), "{err}");
    // On the host the files belong to the volume owner, never to host root
    // or to one box's range.
    let md = std::fs::metadata(host_dir.join("sub/g")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (
            boxd_runtime::idmap::VOLUME_OWNER,
            boxd_runtime::idmap::VOLUME_OWNER
        )
    );

    // Read-only: every write is refused with EROFS; the file is unchanged.
    let (code, out, err) = d.sh(&c, "cat /ro/f; echo x > /ro/f");
    assert_ne!(code, 0, "a write to a read-only volume succeeded");
    assert_eq!(out, "hello\n");
    assert!(err.contains("Read-only file system"), "{err}");
    for cmd in ["touch /ro/new", "rm /ro/f", "mkdir /ro/d", "mv /ro/f /ro/h"] {
        let (code, _, err) = d.sh(&c, cmd);
        assert!(
            code != 0 && err.contains("Read-only file system"),
            "{cmd}: {code} {err}"
        );
    }
    assert_eq!(d.sh(&a, "cat /data/f").1, "hello\n");
    assert!(!host_dir.join("new").exists());

    // In use: 409 naming the boxes, and nothing changes.
    let (s, v) = d.get("/v2/volumes/data");
    assert_eq!(s, 200);
    let mut users: Vec<String> = serde_json::from_value(v["boxes"].clone()).unwrap();
    users.sort();
    let mut all = vec![a.clone(), b.clone(), c.clone()];
    all.sort();
    assert_eq!(users, all);
    let (s, v) = d.delete("/v2/volumes/data");
    assert_eq!(s, 409, "{v}");
    for id in [&a, &b, &c] {
        assert!(error(&v).contains(id.as_str()), "{v}");
    }
    assert_eq!(d.get("/v2/volumes/data").0, 200);
    assert_eq!(d.sh(&b, "cat /mnt/shared/f").1, "hello\n");

    // The volume outlives its boxes.
    for id in [&a, &b, &c] {
        assert_eq!(d.delete(&format!("/v2/box/{id}")).0, 200);
    }
    let (s, v) = d.get("/v2/volumes");
    assert_eq!(s, 200);
    assert_eq!(v["volumes"][0]["name"], "data", "{v}");
    assert_eq!(v["volumes"][0]["boxes"], json!([]), "{v}");
    assert!(host_dir.join("f").is_file());
    let e = d.create(json!({"volumes": [{"name": "data", "path": "/workspace/home/v"}]}));
    let (code, out, _) = d.sh(&e, "cat /workspace/home/v/f /workspace/home/v/sub/g");
    assert_eq!((code, out.as_str()), (0, "hello\nfrom-b\n"));

    // It also survives a daemon restart, and the adopted box still has it.
    d.restart();
    assert_eq!(d.get("/v2/volumes/data").0, 200);
    assert_eq!(d.sh(&e, "cat /workspace/home/v/f").1, "hello\n");

    assert_eq!(d.delete(&format!("/v2/box/{e}")).0, 200);
    let (s, v) = d.delete("/v2/volumes/data");
    assert_eq!(s, 200, "{v}");
    assert!(!host_dir.exists(), "the volume's directory is still there");
    assert_eq!(d.get("/v2/volumes/data").0, 404);
    assert_eq!(d.delete("/v2/volumes/data").0, 404);
}

#[test]
fn bad_volume_specs_are_refused_naming_the_problem_and_create_nothing() {
    let Some(d) = TestDaemon::start() else { return };
    assert_eq!(d.post("/v2/volumes", json!({"name": "data"})).0, 200);
    for (name, problem) in [("", "volume name"), ("a/b", "a/b"), ("..", "..")] {
        let (s, v) = d.post("/v2/volumes", json!({"name": name}));
        assert!(s == 400 && error(&v).contains(problem), "{name:?}: {s} {v}");
    }
    let (s, v) = d.post("/v2/volumes", json!({"name": "z", "size_mib": 0}));
    assert!(s == 400 && error(&v).contains("size_mib"), "{v}");

    let cases = [
        (
            json!([{"name": "nope", "path": "/data"}]),
            "\"nope\" does not exist",
        ),
        (
            json!([{"name": "data", "path": "data"}]),
            "\"data\" must be absolute",
        ),
        (json!([{"name": "data", "path": "/"}]), "root"),
        (json!([{"name": "data", "path": "/a/../etc"}]), "/a/../etc"),
        (json!([{"name": "data", "path": "/data/"}]), "/data/"),
        (json!([{"name": "data", "path": "/proc/x"}]), "/proc"),
        (json!([{"name": "data", "path": "/sys"}]), "/sys"),
        (json!([{"name": "data", "path": "/dev/shm"}]), "/dev"),
        (json!([{"name": "data"}]), "volumes[0]"),
        (
            json!([{"name": "data", "path": "/x", "read_only": "yes"}]),
            "volumes[0]",
        ),
        (
            json!([{"name": "data", "path": "/x"}, {"name": "data", "path": "/x"}]),
            "\"/x\" is given twice",
        ),
        (
            json!([{"name": "data", "path": "/x"}, {"name": "data", "path": "/y"}]),
            "mounted twice",
        ),
    ];
    for (volumes, problem) in cases {
        let (s, v) = d.post("/v2/box", json!({"volumes": volumes}));
        assert!(
            s == 400 && error(&v).contains(problem),
            "{volumes}: expected 400 naming {problem:?}, got {s} {v}"
        );
    }
    // A path through a symlink of the image (`/bin` → `usr/bin`) would be
    // resolved against the host while the box is built: refused.
    let (s, v) = d.post(
        "/v2/box",
        json!({"volumes": [{"name": "data", "path": "/bin/x"}]}),
    );
    assert!(
        s >= 400 && error(&v).contains("/bin is not a directory"),
        "{s} {v}"
    );
    // Another team's volume does not exist for this team.
    let store = boxd_store::Store::open(d.dir.join("boxd.db")).expect("open the store");
    let team = store.create_team("other").expect("team");
    let other = store.create_key(&team.id, "t").expect("key").1;
    let as_other = |m: Method, p: &str, body: Option<Value>| {
        let mut rb = d
            .http
            .request(m, format!("{}{p}", d.url))
            .header("X-Box-Api-Key", &other);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        json_of(rb.send().unwrap())
    };
    let (s, v) = as_other(
        Method::POST,
        "/v2/box",
        Some(json!({"volumes": [{"name": "data", "path": "/d"}]})),
    );
    assert!(s == 400 && error(&v).contains("does not exist"), "{v}");
    assert_eq!(as_other(Method::GET, "/v2/volumes/data", None).0, 404);
    assert_eq!(as_other(Method::DELETE, "/v2/volumes/data", None).0, 404);
    assert_eq!(
        as_other(Method::GET, "/v2/volumes", None).1,
        json!({"volumes": []})
    );
    // Nothing was created by the refused requests.
    assert_eq!(d.get("/v2/box").1, json!([]));
    let boxes = std::fs::read_dir(d.dir.join("pool/boxes")).unwrap().count();
    assert_eq!(boxes, 0);
    assert_eq!(d.get("/v2/volumes/data").1["boxes"], json!([]));
}

#[test]
fn metadata_filters_the_list_and_is_on_every_audit_event_of_the_box() {
    let Some(d) = TestDaemon::start() else { return };
    let prod = d.create(json!({"metadata": {"owner": "agent", "env": "prod"}, "labels": ["x"]}));
    let dev = d.create(json!({"metadata": {"owner": "agent", "env": "dev"}}));
    let human = d.create(json!({"metadata": {"owner": "human"}}));
    let plain = d.create(json!({}));
    let list = |q: &str| {
        let (s, v) = d.get(&format!("/v2/box{q}"));
        assert_eq!(s, 200, "{q}: {v}");
        ids(&v)
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list("?metadata.owner=agent"),
        sorted(vec![prod.clone(), dev.clone()])
    );
    assert_eq!(
        list("?metadata.owner=agent&metadata.env=prod"),
        vec![prod.clone()]
    );
    assert_eq!(list("?metadata.owner=human"), vec![human.clone()]);
    assert_eq!(list("?metadata.owner=nobody"), Vec::<String>::new());
    assert_eq!(list("?metadata.env=dev&label=x"), Vec::<String>::new());
    assert_eq!(list("?metadata.env=prod&label=x"), vec![prod.clone()]);
    assert_eq!(list("").len(), 4);
    assert!(list("").contains(&plain));
    let (s, v) = d.get("/v2/box?metadata.=x");
    assert_eq!(s, 400, "{v}");

    // Size limits.
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (s, v) = d.post("/v2/box", json!({"metadata": many}));
    assert!(s == 400 && error(&v).contains("at most 32"), "{v}");
    let (s, v) = d.post("/v2/box", json!({"metadata": {"k".repeat(65): "v"}}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.post("/v2/box", json!({"metadata": {"k": "v".repeat(513)}}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.post("/v2/box", json!({"metadata": {"": "v"}}));
    assert_eq!(s, 400, "{v}");
    assert_eq!(list("").len(), 4, "a refused create made a box");

    // Every event of the box carries its metadata.
    assert_eq!(d.sh(&prod, "echo hi").1, "hi\n");
    let (s, _) = d.post(
        &format!("/v2/box/{prod}/files/write"),
        json!({"path": "a.txt", "content": "x"}),
    );
    assert_eq!(s, 200);
    assert_eq!(
        d.post(
            &format!("/v2/box/{prod}/config/labels"),
            json!({"label": "y"})
        )
        .0,
        200
    );
    assert_eq!(d.delete(&format!("/v2/box/{prod}")).0, 200);
    let (_, v) = d.get(&format!("/v2/audit?box={prod}"));
    let events = v["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "box.create",
        "exec",
        "file.write",
        "box.label_add",
        "box.delete",
    ] {
        assert!(kinds.contains(&k), "no {k} event: {kinds:?}");
    }
    for e in events {
        assert_eq!(
            e["data"]["metadata"],
            json!({"owner": "agent", "env": "prod"}),
            "{e}"
        );
    }
}
