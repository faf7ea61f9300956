//! `boxd keys create|list|revoke`: the operator's key management, done on
//! the data directory's database directly (no daemon needed).
//!
//! Owns finding the database and the team, and how keys are shown. A new
//! key's value is printed exactly once, alone on stdout (so
//! `KEY=$(boxd keys create)` works), with the reminder on stderr. It never
//! creates a data directory or a database: a missing one is an error that
//! says to start the daemon once. It never prints a stored key's value
//! (the store does not have it) or its hash.

use super::{out, table};
use anyhow::{bail, Context, Result};
use boxd_store::{ApiKeyInfo, Store, Team, DEFAULT_TEAM};
use std::path::{Path, PathBuf};

/// Where the daemon keeps its database.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(boxd_server::DATABASE_FILE)
}

fn open(data_dir: &Path) -> Result<Store> {
    let path = db_path(data_dir);
    if !path.is_file() {
        bail!(
            "no boxd database at {}: start `boxd serve --data-dir {}` once first",
            path.display(),
            data_dir.display()
        );
    }
    Store::open(&path).with_context(|| format!("open the database {}", path.display()))
}

fn find_team(store: &Store, name: &str) -> Result<Team> {
    store
        .team_by_name(name)
        .context("look up the team")?
        .with_context(|| format!("no team named {name:?}"))
}

fn ms_to_secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// The rows of `boxd keys list`.
pub fn list_table(keys: &[ApiKeyInfo], now: i64) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                table::or_dash(&k.name),
                format!("{}…", k.prefix),
                table::age(now, ms_to_secs(k.created_at)),
                k.revoked_at
                    .map(|r| table::age(now, ms_to_secs(r)))
                    .unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    table::render(&["ID", "NAME", "PREFIX", "CREATED", "REVOKED"], &rows)
}

/// Runs a `boxd keys` command; returns the exit code.
pub fn run(data_dir: &Path, json: bool, cmd: &super::KeysCommand) -> Result<i32> {
    let store = open(data_dir)?;
    match cmd {
        super::KeysCommand::Create { name, team } => {
            let t = match store.team_by_name(team).context("look up the team")? {
                Some(t) => t,
                None if team == DEFAULT_TEAM => store
                    .ensure_default_team()
                    .context("create the default team")?,
                None => store
                    .create_team(team)
                    .with_context(|| format!("create the team {team:?}"))?,
            };
            let (info, key) = store.create_key(&t.id, name).context("create the key")?;
            if json {
                let v = serde_json::json!({
                    "id": info.id, "name": info.name, "team": t.name, "prefix": info.prefix,
                    "created_at": info.created_at, "key": key,
                });
                out(format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                out(format!("{key}\n"))?;
            }
            eprintln!(
                "boxd: created key {} ({:?}, team {}). This is the only time its value is shown: \
                 store it now (e.g. export BOXD_API_KEY=...).",
                info.id, info.name, t.name
            );
            Ok(0)
        }
        super::KeysCommand::List { team } => {
            let t = find_team(&store, team)?;
            let keys = store.list_keys(&t.id).context("list the keys")?;
            if json {
                out(format!("{}\n", serde_json::to_string_pretty(&keys)?))?;
            } else {
                out(list_table(&keys, table::now_secs()))?;
            }
            Ok(0)
        }
        super::KeysCommand::Revoke { id, team } => {
            let t = find_team(&store, team)?;
            let revoked = store.revoke_key(&t.id, id).context("revoke the key")?;
            let (found, already) = if revoked {
                (true, false)
            } else {
                let keys = store.list_keys(&t.id).context("list the keys")?;
                let k = keys.iter().find(|k| &k.id == id);
                (k.is_some(), k.is_some_and(|k| k.revoked_at.is_some()))
            };
            if json {
                let v = serde_json::json!({
                    "id": id, "found": found, "revoked": revoked || already,
                });
                out(format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else if revoked {
                out(format!("revoked {id}\n"))?;
            } else if already {
                out(format!("{id} was already revoked\n"))?;
            }
            if !found {
                if !json {
                    eprintln!("boxd: no key {id} in team {}", t.name);
                }
                return Ok(1);
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::KeysCommand;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("boxd-cli-keys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_missing_database_is_not_created() {
        let dir = temp_dir("missing");
        let err = run(
            &dir,
            false,
            &KeysCommand::List {
                team: "default".into(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no boxd database") && err.contains("boxd serve"),
            "{err}"
        );
        assert!(!db_path(&dir).exists());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(run(
            &dir,
            false,
            &KeysCommand::List {
                team: "default".into()
            }
        )
        .is_err());
        assert!(!dir.exists(), "the data dir must not be created");
    }

    #[test]
    fn create_list_revoke() {
        let dir = temp_dir("cycle");
        drop(Store::open(db_path(&dir)).unwrap());
        let create = KeysCommand::Create {
            name: "ci".into(),
            team: "default".into(),
        };
        assert_eq!(run(&dir, true, &create).unwrap(), 0);
        let store = Store::open(db_path(&dir)).unwrap();
        let team = store.team_by_name("default").unwrap().unwrap();
        let keys = store.list_keys(&team.id).unwrap();
        assert_eq!(keys.len(), 1);
        let id = keys[0].id.clone();
        let revoke = |id: &str| KeysCommand::Revoke {
            id: id.into(),
            team: "default".into(),
        };
        assert_eq!(run(&dir, false, &revoke(&id)).unwrap(), 0);
        assert_eq!(
            run(&dir, false, &revoke(&id)).unwrap(),
            0,
            "already revoked"
        );
        assert_eq!(run(&dir, false, &revoke("key_nope")).unwrap(), 1);
        let err = run(
            &dir,
            false,
            &KeysCommand::List {
                team: "other".into(),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("no team named"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_list_never_shows_more_than_the_prefix() {
        let k = ApiKeyInfo {
            id: "key_1".into(),
            team_id: "team_1".into(),
            name: "ci".into(),
            prefix: "boxd_0123456".into(),
            created_at: 940_000,
            revoked_at: Some(970_000),
        };
        assert_eq!(
            list_table(&[k], 1000),
            "ID     NAME  PREFIX         CREATED  REVOKED\n\
             key_1  ci    boxd_0123456…  1m ago   30s ago\n"
        );
    }
}
