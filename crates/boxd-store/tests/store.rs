//! What the store promises the server: keys kept only as hashes, teams
//! kept apart, unique names per team, an audit log nobody can rewrite, and
//! data that survives a restart. Each test names the promise it checks.
//! File-backed tests use a fresh file under the system temp dir, removed
//! afterwards.

use boxd_store::crypto::MasterKeys;
use boxd_store::{
    new_placeholder, AuditFilter, BoxRow, BoxState, NewAuditEvent, NewBox, Store, StoreError,
    KEY_PREFIX, PLACEHOLDER_PREFIX, SCHEMA_VERSION,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Milliseconds since the epoch: the clock the store stamps rows with.
fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Waits (bounded) until the store's clock is past `ms`, so the next write
/// is stamped later than one stamped at `ms`.
fn wait_past(ms: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while now_ms() <= ms {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock did not move past {ms}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A database file path unique to this test run, removed (with its WAL and
/// shared-memory files) when dropped.
struct TempDb {
    path: PathBuf,
}

impl TempDb {
    fn new(test: &str) -> TempDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "boxd-store-{test}-{}-{n}-{nanos}.db",
            std::process::id()
        ));
        let db = TempDb { path };
        db.remove();
        db
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn files(&self) -> Vec<PathBuf> {
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .map(|suffix| {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                PathBuf::from(p)
            })
            .collect()
    }

    /// Every byte the database has on disk right now.
    fn bytes(&self) -> Vec<u8> {
        self.files()
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .flatten()
            .collect()
    }

    fn remove(&self) {
        for f in self.files() {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn filter(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn new_box(team_id: &str, id: &str, name: Option<&str>) -> NewBox {
    NewBox {
        id: id.into(),
        team_id: team_id.into(),
        name: name.map(Into::into),
        state: BoxState::Creating,
        runtime: "node".into(),
        spec: serde_json::json!({ "memory_mib": 512, "env": { "A": "1" } }),
        labels: BTreeMap::new(),
    }
}

fn event(team_id: &str, box_id: Option<&str>, kind: &str) -> NewAuditEvent {
    NewAuditEvent {
        team_id: team_id.into(),
        box_id: box_id.map(Into::into),
        kind: kind.into(),
        key_id: None,
        data: serde_json::json!({ "kind": kind }),
    }
}

fn all_of(team_id: &str) -> AuditFilter {
    AuditFilter {
        team_id: team_id.into(),
        limit: 1000,
        ..AuditFilter::default()
    }
}

fn ids(boxes: &[BoxRow]) -> Vec<&str> {
    boxes.iter().map(|b| b.id.as_str()).collect()
}

#[test]
fn api_keys_are_stored_only_as_hashes() {
    let db = TempDb::new("hashes");
    let store = Store::open(db.path()).unwrap();
    let team = store.ensure_default_team().unwrap();
    let (info, key) = store.create_key(&team.id, "ci").unwrap();
    let supplied = "env-supplied-key-0123456789abcdefghijklmnop";
    store
        .insert_key_with_value(&team.id, "from env", supplied)
        .unwrap();

    for plaintext in [key.as_str(), supplied] {
        // The part of the key that is not its display prefix must be on
        // disk nowhere: not in the database, not in its WAL.
        let secret_part = &plaintext[12..];
        assert!(!contains(&db.bytes(), plaintext.as_bytes()));
        assert!(!contains(&db.bytes(), secret_part.as_bytes()));
        let listed = serde_json::to_string(&store.list_keys(&team.id).unwrap()).unwrap();
        assert!(!listed.contains(secret_part), "{listed}");
    }
    assert_eq!(info.prefix, key[..12]);

    // After closing (the WAL is checkpointed into the main file) the hash
    // is there and the keys still are not.
    drop(store);
    let on_disk = db.bytes();
    for plaintext in [key.as_str(), supplied] {
        assert!(!contains(&on_disk, &plaintext.as_bytes()[12..]));
        assert!(contains(&on_disk, &Sha256::digest(plaintext.as_bytes())));
    }
}

#[test]
fn generated_keys_are_boxd_and_64_hex_digits_and_authenticate() {
    let store = Store::open_in_memory().unwrap();
    let team = store.create_team("acme").unwrap();
    let (info, key) = store.create_key(&team.id, "laptop").unwrap();
    let hex = key.strip_prefix(KEY_PREFIX).unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(info.prefix.len(), 12);
    assert_eq!(info.name, "laptop");
    assert_eq!(info.team_id, team.id);
    assert_eq!(info.revoked_at, None);

    assert_eq!(store.authenticate(&key).unwrap(), Some(info.clone()));
    assert_eq!(store.authenticate(&format!("{key}x")).unwrap(), None);
    assert_eq!(store.authenticate("").unwrap(), None);
    let (_, other) = store.create_key(&team.id, "laptop").unwrap();
    assert_ne!(other, key);
}

#[test]
fn revoked_keys_no_longer_authenticate() {
    let store = Store::open_in_memory().unwrap();
    let team = store.create_team("acme").unwrap();
    let other = store.create_team("other").unwrap();
    let (info, key) = store.create_key(&team.id, "ci").unwrap();
    let (_, kept) = store.create_key(&team.id, "kept").unwrap();

    // Another team cannot revoke it.
    assert!(!store.revoke_key(&other.id, &info.id).unwrap());
    assert!(store.authenticate(&key).unwrap().is_some());

    assert!(store.revoke_key(&team.id, &info.id).unwrap());
    assert_eq!(store.authenticate(&key).unwrap(), None);
    assert!(store.authenticate(&kept).unwrap().is_some());
    assert!(
        !store.revoke_key(&team.id, &info.id).unwrap(),
        "already revoked"
    );
    assert!(!store.revoke_key(&team.id, "key_nope").unwrap());

    let listed = store.list_keys(&team.id).unwrap();
    assert_eq!(listed.len(), 2);
    let revoked = listed.iter().find(|k| k.id == info.id).unwrap();
    assert!(revoked.revoked_at.is_some());

    // A revoked key cannot be brought back by supplying it again.
    let err = store
        .insert_key_with_value(&team.id, "again", &key)
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(store.authenticate(&key).unwrap(), None);
}

#[test]
fn supplied_keys_must_be_long_enough_and_unique() {
    let store = Store::open_in_memory().unwrap();
    let team = store.ensure_default_team().unwrap();
    let err = store
        .insert_key_with_value(&team.id, "short", "boxd_tooshort")
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(!err.to_string().contains("boxd_tooshort"));

    let key = "boxd_0123456789abcdef0123456789abcdef";
    let info = store.insert_key_with_value(&team.id, "env", key).unwrap();
    assert_eq!(info.prefix, "boxd_0123456");
    assert_eq!(store.authenticate(key).unwrap(), Some(info));
    let err = store
        .insert_key_with_value(&team.id, "env", key)
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(!err.to_string().contains(key));
}

#[test]
fn a_key_sees_only_its_teams_boxes() {
    let store = Store::open_in_memory().unwrap();
    let a = store.create_team("a").unwrap();
    let b = store.create_team("b").unwrap();
    let (_, key_a) = store.create_key(&a.id, "a").unwrap();
    let (_, key_b) = store.create_key(&b.id, "b").unwrap();
    store
        .insert_box(&new_box(&a.id, "box-a1", Some("web")))
        .unwrap();
    store.insert_box(&new_box(&a.id, "box-a2", None)).unwrap();
    store
        .insert_box(&new_box(&b.id, "box-b1", Some("web")))
        .unwrap();

    let team_of = |key: &str| store.authenticate(key).unwrap().unwrap().team_id;
    assert_eq!(team_of(&key_a), a.id);
    assert_eq!(team_of(&key_b), b.id);

    let as_a = team_of(&key_a);
    assert_eq!(
        ids(&store.list_boxes(&as_a, &[]).unwrap()),
        ["box-a1", "box-a2"]
    );
    assert!(store.get_box(&as_a, "box-a1").unwrap().is_some());
    assert!(store.get_box(&as_a, "box-b1").unwrap().is_none());
    assert_eq!(
        store.get_box_by_name(&as_a, "web").unwrap().unwrap().id,
        "box-a1"
    );
    assert!(!store.delete_box(&as_a, "box-b1").unwrap());
    assert!(store.get_box(&b.id, "box-b1").unwrap().is_some());

    let as_b = team_of(&key_b);
    assert_eq!(ids(&store.list_boxes(&as_b, &[]).unwrap()), ["box-b1"]);
    assert_eq!(
        store.get_box_by_name(&as_b, "web").unwrap().unwrap().id,
        "box-b1"
    );
    assert!(store
        .list_keys(&as_b)
        .unwrap()
        .iter()
        .all(|k| k.team_id == b.id));

    // Re-adoption at start sees everyone's boxes.
    assert_eq!(
        ids(&store.all_boxes().unwrap()),
        ["box-a1", "box-a2", "box-b1"]
    );
}

#[test]
fn duplicate_box_names_conflict_within_a_team_only() {
    let store = Store::open_in_memory().unwrap();
    let a = store.create_team("a").unwrap();
    let b = store.create_team("b").unwrap();
    store.insert_box(&new_box(&a.id, "1", Some("web"))).unwrap();

    let err = store
        .insert_box(&new_box(&a.id, "2", Some("web")))
        .unwrap_err();
    match err {
        StoreError::Conflict(msg) => assert!(msg.contains("web"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(store.get_box(&a.id, "2").unwrap().is_none());

    // Another team may use the name; unnamed boxes never conflict.
    store.insert_box(&new_box(&b.id, "3", Some("web"))).unwrap();
    store.insert_box(&new_box(&a.id, "4", None)).unwrap();
    store.insert_box(&new_box(&a.id, "5", None)).unwrap();

    // Ids are unique across teams.
    let err = store.insert_box(&new_box(&b.id, "1", None)).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");

    // A deleted box frees its name.
    assert!(store.delete_box(&a.id, "1").unwrap());
    store.insert_box(&new_box(&a.id, "6", Some("web"))).unwrap();
}

#[test]
fn rows_for_an_unknown_team_are_not_found() {
    let store = Store::open_in_memory().unwrap();
    let not_found = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    };
    not_found(store.insert_box(&new_box("team_nope", "x", None)).map(drop));
    not_found(store.create_key("team_nope", "k").map(drop));
    not_found(store.append_audit(&event("team_nope", None, "x")).map(drop));
    not_found(store.set_team_env("team_nope", &labels(&[("A", "1")])));
    not_found(store.set_box_state("nope", BoxState::Running));
    not_found(store.update_box_labels("nope", &BTreeMap::new()));
    not_found(store.update_box_spec("nope", &serde_json::json!({})));
    assert_eq!(store.box_by_id("nope").unwrap(), None);
}

#[test]
fn teams_have_unique_names_and_one_default() {
    let store = Store::open_in_memory().unwrap();
    let default = store.ensure_default_team().unwrap();
    assert_eq!(default.name, "default");
    assert_eq!(store.ensure_default_team().unwrap(), default);
    assert_eq!(
        store.team_by_name("default").unwrap(),
        Some(default.clone())
    );
    assert_eq!(store.team(&default.id).unwrap(), Some(default));
    assert_eq!(store.team_by_name("acme").unwrap(), None);

    let acme = store.create_team("acme").unwrap();
    assert!(acme.id.starts_with("team_"));
    let err = store.create_team("acme").unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let err = store.create_team("default").unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
}

#[test]
fn box_state_and_labels_are_recorded() {
    let store = Store::open_in_memory().unwrap();
    let team = store.ensure_default_team().unwrap();
    let mut spec = new_box(&team.id, "b1", Some("api"));
    spec.labels = labels(&[("env", "dev")]);
    let inserted = store.insert_box(&spec).unwrap();
    assert_eq!(inserted.state, BoxState::Creating);
    assert_eq!(inserted.created_at, inserted.updated_at);
    assert_eq!(
        store.get_box(&team.id, "b1").unwrap(),
        Some(inserted.clone())
    );

    wait_past(inserted.updated_at);
    store.set_box_state("b1", BoxState::Running).unwrap();
    store
        .update_box_labels("b1", &labels(&[("env", "prod"), ("tier", "1")]))
        .unwrap();
    let row = store.get_box(&team.id, "b1").unwrap().unwrap();
    assert_eq!(row.state, BoxState::Running);
    assert_eq!(row.labels, labels(&[("env", "prod"), ("tier", "1")]));
    assert_eq!(row.spec, spec.spec);
    assert_eq!(row.created_at, inserted.created_at);
    assert_eq!(store.box_by_id("b1").unwrap(), Some(row.clone()));
    let new_spec = serde_json::json!({"network_policy": {"mode": "deny-all"}});
    store.update_box_spec("b1", &new_spec).unwrap();
    assert_eq!(store.box_by_id("b1").unwrap().unwrap().spec, new_spec);
    store.update_box_spec("b1", &spec.spec).unwrap();
    assert!(row.updated_at > inserted.updated_at);

    // The store records any state; the state machine is the server's.
    for state in BoxState::ALL {
        store.set_box_state("b1", state).unwrap();
        assert_eq!(store.get_box(&team.id, "b1").unwrap().unwrap().state, state);
        assert_eq!(state.to_string().parse::<BoxState>().unwrap(), state);
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            serde_json::json!(state.as_str())
        );
    }
    assert!("Running".parse::<BoxState>().is_err());

    assert!(store.delete_box(&team.id, "b1").unwrap());
    assert!(!store.delete_box(&team.id, "b1").unwrap());
    assert!(store.get_box(&team.id, "b1").unwrap().is_none());
}

#[test]
fn box_states_are_stored_as_lowercase_text() {
    let db = TempDb::new("states");
    let store = Store::open(db.path()).unwrap();
    let team = store.ensure_default_team().unwrap();
    store.insert_box(&new_box(&team.id, "b1", None)).unwrap();
    store.set_box_state("b1", BoxState::Paused).unwrap();

    let raw = rusqlite::Connection::open(db.path()).unwrap();
    let state: String = raw
        .query_row("SELECT state FROM boxes WHERE id = 'b1'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "paused");
    // The database refuses a state the enum does not have.
    raw.execute("UPDATE boxes SET state = 'Paused' WHERE id = 'b1'", [])
        .unwrap_err();
}

#[test]
fn label_filter_matches_all_pairs() {
    let store = Store::open_in_memory().unwrap();
    let team = store.ensure_default_team().unwrap();
    for (id, pairs) in [
        ("dev-web", &[("env", "dev"), ("app", "web")][..]),
        ("dev-api", &[("env", "dev"), ("app", "api")][..]),
        ("prod-web", &[("env", "prod"), ("app", "web")][..]),
        ("bare", &[][..]),
    ] {
        let mut b = new_box(&team.id, id, None);
        b.labels = labels(pairs);
        store.insert_box(&b).unwrap();
    }
    let list = |pairs: &[(&str, &str)]| {
        let boxes = store.list_boxes(&team.id, &filter(pairs)).unwrap();
        boxes.into_iter().map(|b| b.id).collect::<Vec<_>>()
    };
    assert_eq!(list(&[]), ["dev-web", "dev-api", "prod-web", "bare"]);
    assert_eq!(list(&[("env", "dev")]), ["dev-web", "dev-api"]);
    assert_eq!(list(&[("app", "web")]), ["dev-web", "prod-web"]);
    assert_eq!(list(&[("env", "dev"), ("app", "web")]), ["dev-web"]);
    assert!(list(&[("env", "prod"), ("app", "api")]).is_empty());
    assert!(list(&[("env", "dev"), ("missing", "")]).is_empty());
    assert!(list(&[("env", "DEV")]).is_empty());
}

#[test]
fn audit_events_cannot_be_updated_or_deleted() {
    let db = TempDb::new("audit");
    let store = Store::open(db.path()).unwrap();
    let team = store.ensure_default_team().unwrap();
    let seq = store
        .append_audit(&event(&team.id, Some("b1"), "box.create"))
        .unwrap();
    let before = store.list_audit(&all_of(&team.id)).unwrap();

    // Any connection, not just the store's, is refused, including the
    // REPLACE that would delete a row without firing DELETE triggers.
    let raw = rusqlite::Connection::open(db.path()).unwrap();
    for sql in [
        "UPDATE audit_events SET kind = 'tampered'",
        "UPDATE audit_events SET data_json = '{}' WHERE seq = ?1",
        "DELETE FROM audit_events WHERE seq = ?1",
        "DELETE FROM audit_events",
        "INSERT OR REPLACE INTO audit_events (seq, ts, team_id, kind, data_json)
         SELECT seq, ts, team_id, 'tampered', '{}' FROM audit_events WHERE seq = ?1",
        "REPLACE INTO audit_events (seq, ts, team_id, kind, data_json)
         VALUES (?1, 0, 'team_x', 'tampered', '{}')",
        "INSERT INTO audit_events (seq, ts, team_id, kind, data_json)
         VALUES (?1, 0, 'team_x', 'tampered', '{}')
         ON CONFLICT (seq) DO UPDATE SET kind = 'tampered'",
    ] {
        let result = if sql.contains("?1") {
            raw.execute(sql, [seq])
        } else {
            raw.execute(sql, [])
        };
        let err = result.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.list_audit(&all_of(&team.id)).unwrap(), before);
    // Appending still works.
    assert!(store.append_audit(&event(&team.id, None, "x")).unwrap() > seq);
}

#[test]
fn audit_listing_filters_by_box_kind_time_and_seq() {
    let store = Store::open_in_memory().unwrap();
    let team = store.ensure_default_team().unwrap();
    let other = store.create_team("other").unwrap();
    let mut seqs = Vec::new();
    for (box_id, kind) in [
        (Some("b1"), "box.create"),
        (Some("b1"), "exec"),
        (Some("b2"), "box.create"),
        (None, "key.create"),
    ] {
        seqs.push(store.append_audit(&event(&team.id, box_id, kind)).unwrap());
    }
    wait_past(now_ms());
    let mut late = event(&team.id, Some("b1"), "exec");
    late.key_id = Some("key_1".into());
    late.data = serde_json::json!({ "command": ["ls"], "exit_code": 0 });
    seqs.push(store.append_audit(&late).unwrap());
    store
        .append_audit(&event(&other.id, Some("b1"), "exec"))
        .unwrap();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let list = |f: AuditFilter| {
        let events = store.list_audit(&f).unwrap();
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
        events.into_iter().map(|e| e.seq).collect::<Vec<_>>()
    };
    assert_eq!(list(all_of(&team.id)), seqs);
    assert_eq!(
        list(AuditFilter {
            box_id: Some("b1".into()),
            ..all_of(&team.id)
        }),
        [seqs[0], seqs[1], seqs[4]]
    );
    assert_eq!(
        list(AuditFilter {
            box_id: Some("b1".into()),
            kind: Some("exec".into()),
            ..all_of(&team.id)
        }),
        [seqs[1], seqs[4]]
    );
    assert_eq!(
        list(AuditFilter {
            after_seq: Some(seqs[2]),
            ..all_of(&team.id)
        }),
        [seqs[3], seqs[4]]
    );
    assert_eq!(
        list(AuditFilter {
            limit: 2,
            ..all_of(&team.id)
        }),
        [seqs[0], seqs[1]]
    );

    let events = store.list_audit(&all_of(&team.id)).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.key_id.as_deref(), Some("key_1"));
    assert_eq!(last.data, late.data);
    assert_eq!(
        list(AuditFilter {
            since_ms: Some(last.ts),
            ..all_of(&team.id)
        }),
        [seqs[4]]
    );
}

#[test]
fn team_env_is_replaced_whole_and_kept_per_team() {
    let store = Store::open_in_memory().unwrap();
    let a = store.create_team("a").unwrap();
    let b = store.create_team("b").unwrap();
    assert!(store.team_env(&a.id).unwrap().is_empty());

    store
        .set_team_env(&a.id, &labels(&[("A", "1"), ("B", "two words")]))
        .unwrap();
    store
        .set_team_env(&b.id, &labels(&[("A", "other")]))
        .unwrap();
    assert_eq!(
        store.team_env(&a.id).unwrap(),
        labels(&[("A", "1"), ("B", "two words")])
    );

    store.set_team_env(&a.id, &labels(&[("C", "3")])).unwrap();
    assert_eq!(store.team_env(&a.id).unwrap(), labels(&[("C", "3")]));
    assert_eq!(store.team_env(&b.id).unwrap(), labels(&[("A", "other")]));

    store.set_team_env(&a.id, &BTreeMap::new()).unwrap();
    assert!(store.team_env(&a.id).unwrap().is_empty());
}

#[test]
fn data_survives_reopening_the_file() {
    let db = TempDb::new("reopen");
    let (team, key, seq) = {
        let store = Store::open(db.path()).unwrap();
        let team = store.ensure_default_team().unwrap();
        let (_, key) = store.create_key(&team.id, "ci").unwrap();
        let mut b = new_box(&team.id, "b1", Some("web"));
        b.labels = labels(&[("env", "dev")]);
        store.insert_box(&b).unwrap();
        store.set_box_state("b1", BoxState::Running).unwrap();
        store
            .set_team_env(&team.id, &labels(&[("A", "1")]))
            .unwrap();
        let seq = store
            .append_audit(&event(&team.id, Some("b1"), "box.create"))
            .unwrap();
        (team, key, seq)
    };

    let store = Store::open(db.path()).unwrap();
    assert_eq!(store.ensure_default_team().unwrap(), team);
    assert_eq!(store.authenticate(&key).unwrap().unwrap().team_id, team.id);
    let b = store.get_box_by_name(&team.id, "web").unwrap().unwrap();
    assert_eq!(b.state, BoxState::Running);
    assert_eq!(b.labels, labels(&[("env", "dev")]));
    assert_eq!(b.spec["memory_mib"], 512);
    assert_eq!(store.team_env(&team.id).unwrap(), labels(&[("A", "1")]));
    let events = store.list_audit(&all_of(&team.id)).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, seq);
    // Sequence numbers keep growing across restarts.
    assert!(store.append_audit(&event(&team.id, None, "x")).unwrap() > seq);
}

#[test]
fn migrations_are_idempotent() {
    let db = TempDb::new("migrations");
    let team = {
        let store = Store::open(db.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.create_team("acme").unwrap()
    };
    for _ in 0..3 {
        let store = Store::open(db.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.team_by_name("acme").unwrap(), Some(team.clone()));
    }
    // Two stores on one file at once both see the migrated schema.
    let first = Store::open(db.path()).unwrap();
    let second = Store::open(db.path()).unwrap();
    second.create_team("beta").unwrap();
    assert!(first.team_by_name("beta").unwrap().is_some());
}

#[test]
fn a_newer_schema_is_refused() {
    let db = TempDb::new("newer");
    drop(Store::open(db.path()).unwrap());
    let raw = rusqlite::Connection::open(db.path()).unwrap();
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(raw);
    match Store::open(db.path()) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn one_store_is_shared_by_many_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Store>();

    let db = TempDb::new("threads");
    let store = Store::open(db.path()).unwrap();
    let team = store.ensure_default_team().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            let team_id = team.id.clone();
            std::thread::spawn(move || {
                let id = format!("box-{t}");
                store.insert_box(&new_box(&team_id, &id, None)).unwrap();
                (0..25)
                    .map(|_| {
                        store
                            .append_audit(&event(&team_id, Some(&id), "exec"))
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 200);
    assert_eq!(store.list_audit(&all_of(&team.id)).unwrap().len(), 200);
    assert_eq!(store.list_boxes(&team.id, &[]).unwrap().len(), 8);
}

/// A master key file next to the test database, removed when dropped.
struct TempKeys(PathBuf);

impl TempKeys {
    fn new(db: &TempDb) -> TempKeys {
        let mut p = db.path().to_path_buf().into_os_string();
        p.push(".key");
        let keys = TempKeys(PathBuf::from(p));
        let _ = std::fs::remove_file(&keys.0);
        keys
    }

    fn load(&self) -> MasterKeys {
        MasterKeys::load_or_create(&self.0).unwrap()
    }
}

impl Drop for TempKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A store with one team and box `b-1`, file-backed.
fn store_with_box(db: &TempDb) -> (Store, String) {
    let store = Store::open(db.path()).unwrap();
    let team = store.ensure_default_team().unwrap();
    store.insert_box(&new_box(&team.id, "b-1", None)).unwrap();
    (store, team.id)
}

const STRIPE: &str = "Bearer sk_live_STRIPEVALUE_4f1e2d3c2b1a";
const SUPABASE: &str = "supabase-anon-key-SUPAVALUE-9a8b7c6d";
const OPENAI: &str = "sk-OPENAIVALUE-0123456789abcdefghij";
const BOX_STRIPE: &str = "Bearer sk_live_BOXSTRIPE_aaaabbbbcccc";

/// Writes team and box headers and a box secret; returns the placeholder.
fn write_values(store: &Store, keys: &MasterKeys, team: &str) -> String {
    store
        .put_team_attach_header(
            keys,
            team,
            "api.stripe.com",
            "Authorization",
            STRIPE.as_bytes(),
        )
        .unwrap();
    store
        .put_team_attach_header(keys, team, "*.supabase.co", "apikey", SUPABASE.as_bytes())
        .unwrap();
    store
        .put_box_attach_header(
            keys,
            team,
            "b-1",
            "api.stripe.com",
            "Authorization",
            BOX_STRIPE.as_bytes(),
        )
        .unwrap();
    let placeholder = new_placeholder().unwrap();
    store
        .put_box_secret(
            keys,
            team,
            "b-1",
            "OPENAI_API_KEY",
            r#"["api.openai.com"]"#,
            &placeholder,
            OPENAI.as_bytes(),
        )
        .unwrap();
    placeholder
}

#[test]
fn secret_values_never_reach_the_database_files() {
    let db = TempDb::new("secrets-bytes");
    let key_file = TempKeys::new(&db);
    let keys = key_file.load();
    let (store, team) = store_with_box(&db);
    let placeholder = write_values(&store, &keys, &team);
    // Overwrite and delete some, so freed pages and WAL frames are searched
    // too.
    store
        .delete_team_attach_header(&team, "*.supabase.co")
        .unwrap();
    store
        .put_team_attach_header(&keys, &team, "*.supabase.co", "apikey", SUPABASE.as_bytes())
        .unwrap();
    let values = [STRIPE, SUPABASE, OPENAI, BOX_STRIPE];
    let check = |bytes: &[u8]| {
        assert!(!bytes.is_empty());
        for v in values {
            assert!(!contains(bytes, v.as_bytes()), "{v} on disk");
            // The distinctive middle part, in case of a partial write.
            assert!(!contains(bytes, &v.as_bytes()[8..24]), "{v} on disk");
        }
    };
    check(&db.bytes());
    // Non-secret metadata is there, so the search does look at the rows.
    assert!(contains(&db.bytes(), placeholder.as_bytes()));
    assert!(contains(&db.bytes(), b"api.stripe.com"));

    // Debug output of everything the store hands out, and listings.
    let shown = format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {keys:?} {store:?}",
        store.list_team_attach_headers(&team).unwrap(),
        store.sealed_team_attach_headers(&team).unwrap(),
        store.box_attach_headers("b-1").unwrap(),
        store.box_attach_header_names("b-1").unwrap(),
        store.box_secrets("b-1").unwrap(),
        store.box_secret_names("b-1").unwrap(),
    );
    for v in values {
        assert!(!shown.contains(v), "{v} in {shown}");
        assert!(!shown.contains(&v[8..24]), "{v} in {shown}");
    }
    // Errors mention names, not values.
    let errors = [
        store
            .put_box_secret(
                &keys,
                &team,
                "b-1",
                "OPENAI_API_KEY",
                "[]",
                &new_placeholder().unwrap(),
                OPENAI.as_bytes(),
            )
            .unwrap_err(),
        store
            .put_box_secret(
                &keys,
                &team,
                "b-1",
                "OTHER",
                "[]",
                &placeholder,
                OPENAI.as_bytes(),
            )
            .unwrap_err(),
        store
            .put_team_attach_header(
                &keys,
                &team,
                "api.stripe.com",
                "Authorization",
                STRIPE.as_bytes(),
            )
            .unwrap_err(),
        store
            .put_box_secret(&keys, &team, "b-1", "X", "not json", "p", OPENAI.as_bytes())
            .unwrap_err(),
        {
            let mut s = store.box_secrets("b-1").unwrap().remove(0).value;
            s.aad.box_id = Some("b-2".into());
            s.open(&keys).unwrap_err()
        },
    ];
    for err in errors {
        let text = format!("{err} {err:?}");
        for v in values {
            assert!(!text.contains(&v[8..24]), "{v} in {text}");
        }
    }

    // Checkpointed into the main file and closed: still not there.
    drop(store);
    let store = Store::open(db.path()).unwrap();
    drop(store);
    check(&db.bytes());
    assert!(contains(&db.bytes(), placeholder.as_bytes()));
}

#[test]
fn sealed_values_open_with_the_keys_and_listings_show_names_only() {
    let db = TempDb::new("secrets-open");
    let key_file = TempKeys::new(&db);
    let keys = key_file.load();
    let (store, team) = store_with_box(&db);
    let placeholder = write_values(&store, &keys, &team);
    assert!(placeholder.starts_with(PLACEHOLDER_PREFIX));
    assert_eq!(placeholder.len(), PLACEHOLDER_PREFIX.len() + 32); // 128 bits
    assert_ne!(placeholder, new_placeholder().unwrap());

    assert_eq!(
        store.list_team_attach_headers(&team).unwrap(),
        [
            ("*.supabase.co".to_owned(), "apikey".to_owned()),
            ("api.stripe.com".to_owned(), "Authorization".to_owned()),
        ]
    );
    assert_eq!(
        store.box_attach_header_names("b-1").unwrap(),
        [("api.stripe.com".to_owned(), "Authorization".to_owned())]
    );
    let names = store.box_secret_names("b-1").unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].name, "OPENAI_API_KEY");
    assert_eq!(names[0].hosts_json, r#"["api.openai.com"]"#);
    assert_eq!(names[0].placeholder, placeholder);

    let team_headers = store.sealed_team_attach_headers(&team).unwrap();
    let opened: Vec<(String, Vec<u8>)> = team_headers
        .iter()
        .map(|h| (h.pattern.clone(), h.value.open(&keys).unwrap().to_vec()))
        .collect();
    assert_eq!(
        opened,
        [
            ("api.stripe.com".to_owned(), STRIPE.as_bytes().to_vec()),
            ("*.supabase.co".to_owned(), SUPABASE.as_bytes().to_vec()),
        ]
    );
    let box_headers = store.box_attach_headers("b-1").unwrap();
    assert_eq!(box_headers.len(), 1);
    assert_eq!(
        box_headers[0].value.open(&keys).unwrap().as_slice(),
        BOX_STRIPE.as_bytes()
    );
    let secrets = store.box_secrets("b-1").unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].placeholder, placeholder);
    assert_eq!(
        secrets[0].value.open(&keys).unwrap().as_slice(),
        OPENAI.as_bytes()
    );

    // Another master key file opens nothing.
    let other_db = TempDb::new("secrets-open-other");
    let other = TempKeys::new(&other_db).load();
    assert!(matches!(
        secrets[0].value.open(&other),
        Err(StoreError::Decrypt(_))
    ));

    // Deleting a pattern removes all of its headers, and only them.
    store
        .put_team_attach_header(&keys, &team, "*.supabase.co", "x-extra", b"v")
        .unwrap();
    assert_eq!(
        store
            .delete_team_attach_header(&team, "*.supabase.co")
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .delete_team_attach_header(&team, "*.supabase.co")
            .unwrap(),
        0
    );
    assert_eq!(
        store.list_team_attach_headers(&team).unwrap(),
        [("api.stripe.com".to_owned(), "Authorization".to_owned())]
    );
    assert_eq!(store.box_attach_header_names("b-1").unwrap().len(), 1);
}

#[test]
fn a_value_moved_to_another_row_in_the_database_does_not_open() {
    let db = TempDb::new("secrets-moved");
    let key_file = TempKeys::new(&db);
    let keys = key_file.load();
    let (store, team) = store_with_box(&db);
    write_values(&store, &keys, &team);
    drop(store);
    // Someone with write access to the database re-points the secret at
    // another host and copies a header value to another pattern.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute(
        "UPDATE secret_values SET hosts_json = '[\"evil.example\"]' WHERE kind = 'secret'",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE secret_values SET pattern = 'evil.example' WHERE pattern = '*.supabase.co'",
        [],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(db.path()).unwrap();
    let secret = store.box_secrets("b-1").unwrap().remove(0);
    assert!(matches!(
        secret.value.open(&keys),
        Err(StoreError::Decrypt(_))
    ));
    let moved = store
        .sealed_team_attach_headers(&team)
        .unwrap()
        .into_iter()
        .find(|h| h.pattern == "evil.example")
        .unwrap();
    assert!(matches!(
        moved.value.open(&keys),
        Err(StoreError::Decrypt(_))
    ));
    // And resealing under a new key refuses to launder them: nothing moves.
    MasterKeys::rotate(&key_file.0).unwrap();
    let rotated = key_file.load();
    assert!(matches!(
        store.reseal_all(&rotated),
        Err(StoreError::Decrypt(_))
    ));
    assert_eq!(store.sealed_key_ids().unwrap(), ["k1"]);
}

#[test]
fn rotation_then_reseal_moves_every_row_so_the_old_key_can_go() {
    let db = TempDb::new("secrets-rotate");
    let key_file = TempKeys::new(&db);
    let keys = key_file.load();
    let (store, team) = store_with_box(&db);
    write_values(&store, &keys, &team);
    assert_eq!(store.sealed_key_ids().unwrap(), ["k1"]);

    assert_eq!(MasterKeys::rotate(&key_file.0).unwrap(), "k2");
    let rotated = key_file.load();
    // Before resealing, old rows open under their old key id.
    let before = store.box_secrets("b-1").unwrap().remove(0);
    assert_eq!(before.value.sealed.key_id, "k1");
    assert_eq!(
        before.value.open(&rotated).unwrap().as_slice(),
        OPENAI.as_bytes()
    );

    assert_eq!(store.reseal_all(&rotated).unwrap(), 4);
    assert_eq!(store.sealed_key_ids().unwrap(), ["k2"]);
    assert_eq!(store.reseal_all(&rotated).unwrap(), 0);
    let after = store.box_secrets("b-1").unwrap().remove(0);
    assert_ne!(after.value.sealed.nonce, before.value.sealed.nonce);

    // Drop k1 from the key file: everything still opens.
    let text = std::fs::read_to_string(&key_file.0).unwrap();
    let only_k2: String = text.lines().filter(|l| l.starts_with("k2:")).collect();
    std::fs::remove_file(&key_file.0).unwrap();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file.0)
            .unwrap();
        writeln!(f, "{only_k2}").unwrap();
    }
    let only_new = key_file.load();
    assert_eq!(only_new.key_ids(), ["k2"]);
    assert_eq!(
        after.value.open(&only_new).unwrap().as_slice(),
        OPENAI.as_bytes()
    );
    for h in store
        .sealed_team_attach_headers(&team)
        .unwrap()
        .into_iter()
        .chain(store.box_attach_headers("b-1").unwrap())
    {
        h.value.open(&only_new).unwrap();
    }
    // The pre-reseal copy names k1, which is gone.
    assert!(matches!(
        before.value.open(&only_new),
        Err(StoreError::UnknownKey(id)) if id == "k1"
    ));
}

#[test]
fn deleting_a_box_deletes_its_secrets_and_headers_only() {
    let db = TempDb::new("secrets-delete");
    let key_file = TempKeys::new(&db);
    let keys = key_file.load();
    let (store, team) = store_with_box(&db);
    write_values(&store, &keys, &team);
    store.insert_box(&new_box(&team, "b-2", None)).unwrap();
    store
        .put_box_secret(
            &keys,
            &team,
            "b-2",
            "T",
            "[]",
            &new_placeholder().unwrap(),
            b"v2",
        )
        .unwrap();

    assert!(store.delete_box(&team, "b-1").unwrap());
    assert!(store.box_secrets("b-1").unwrap().is_empty());
    assert!(store.box_attach_headers("b-1").unwrap().is_empty());
    assert!(store.box_secret_names("b-1").unwrap().is_empty());
    assert_eq!(store.box_secrets("b-2").unwrap().len(), 1);
    assert_eq!(store.list_team_attach_headers(&team).unwrap().len(), 2);
    // The rows are gone, not hidden.
    drop(store);
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM secret_values WHERE box_id = 'b-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn duplicate_or_misplaced_secrets_are_typed_errors() {
    let db = TempDb::new("secrets-unique");
    let key_file = TempKeys::new(&db);
    let keys = key_file.load();
    let (store, team) = store_with_box(&db);
    let placeholder = write_values(&store, &keys, &team);
    let other_team = store.create_team("other").unwrap();
    store
        .insert_box(&new_box(&other_team.id, "b-9", None))
        .unwrap();

    // Same team pattern + header twice.
    assert!(matches!(
        store.put_team_attach_header(&keys, &team, "api.stripe.com", "Authorization", b"x"),
        Err(StoreError::Conflict(_))
    ));
    // Same box pattern + header twice.
    assert!(matches!(
        store.put_box_attach_header(&keys, &team, "b-1", "api.stripe.com", "Authorization", b"x"),
        Err(StoreError::Conflict(_))
    ));
    // Same secret name twice in a box.
    assert!(matches!(
        store.put_box_secret(
            &keys,
            &team,
            "b-1",
            "OPENAI_API_KEY",
            "[]",
            &new_placeholder().unwrap(),
            b"x"
        ),
        Err(StoreError::Conflict(_))
    ));
    // A placeholder reused, even in another team's box.
    assert!(matches!(
        store.put_box_secret(&keys, &other_team.id, "b-9", "A", "[]", &placeholder, b"x"),
        Err(StoreError::Conflict(_))
    ));
    // The same pattern in another team, or per box, is fine.
    store
        .put_team_attach_header(
            &keys,
            &other_team.id,
            "api.stripe.com",
            "Authorization",
            b"x",
        )
        .unwrap();
    // Unknown team, unknown box, a box of another team.
    assert!(matches!(
        store.put_team_attach_header(&keys, "team_nope", "a.example", "h", b"x"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.put_box_secret(
            &keys,
            &team,
            "b-404",
            "A",
            "[]",
            &new_placeholder().unwrap(),
            b"x"
        ),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.put_box_attach_header(&keys, &team, "b-9", "a.example", "h", b"x"),
        Err(StoreError::NotFound(_))
    ));
    // Hosts must be JSON.
    assert!(matches!(
        store.put_box_secret(
            &keys,
            &team,
            "b-1",
            "B",
            "[",
            &new_placeholder().unwrap(),
            b"x"
        ),
        Err(StoreError::Json(_))
    ));
}

#[test]
fn a_boxs_rules_are_stored_all_or_nothing_and_team_rules_replaced_whole() {
    let db = TempDb::new("secrets-atomic");
    let key_file = TempKeys::new(&db);
    let keys = key_file.load();
    let (store, team) = store_with_box(&db);
    let ph = new_placeholder().unwrap();
    // The second secret repeats the first's name: nothing of the call stays.
    let err = store
        .put_box_secret_rules(
            &keys,
            &team,
            "b-1",
            &[("api.stripe.com", "Authorization", STRIPE.as_bytes())],
            &[
                (
                    "OPENAI_API_KEY",
                    "[\"api.openai.com\"]",
                    &ph,
                    OPENAI.as_bytes(),
                ),
                (
                    "OPENAI_API_KEY",
                    "[\"api.openai.com\"]",
                    "other",
                    OPENAI.as_bytes(),
                ),
            ],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(store.box_attach_headers("b-1").unwrap().is_empty());
    assert!(store.box_secrets("b-1").unwrap().is_empty());
    store
        .put_box_secret_rules(
            &keys,
            &team,
            "b-1",
            &[("api.stripe.com", "Authorization", STRIPE.as_bytes())],
            &[(
                "OPENAI_API_KEY",
                "[\"api.openai.com\"]",
                &ph,
                OPENAI.as_bytes(),
            )],
        )
        .unwrap();
    assert_eq!(store.box_attach_headers("b-1").unwrap().len(), 1);
    let secrets = store.box_secrets("b-1").unwrap();
    assert_eq!(
        secrets[0].value.open(&keys).unwrap().as_slice(),
        OPENAI.as_bytes()
    );

    store
        .replace_team_attach_headers(
            &keys,
            &team,
            "*.supabase.co",
            &[("apikey", b"one"), ("x-extra", b"two")],
        )
        .unwrap();
    store
        .replace_team_attach_headers(&keys, &team, "*.supabase.co", &[("apikey", b"three")])
        .unwrap();
    let rows = store.sealed_team_attach_headers(&team).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].value.open(&keys).unwrap().as_slice(), b"three");
}
