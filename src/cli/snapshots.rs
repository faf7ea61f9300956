//! `boxd snapshot create|ls|rm`: a box's snapshots over the API (`boxd
//! create --from-snapshot` starts a box from one, in `commands`).
//!
//! Owns the snapshot table and the per-id report of `rm` (every id is
//! tried; one failure makes the exit code 1). It never reads or writes
//! snapshot files: the daemon owns them.

use super::client::Client;
use super::commands::{delete_each, print_json};
use super::{out, table, SnapshotCommand};
use anyhow::{anyhow, Context, Result};
use boxd_api::{CreateSnapshotRequest, Snapshot, SnapshotsResponse};
use reqwest::Method;

pub async fn run(client: &Client, json: bool, cmd: &SnapshotCommand) -> Result<i32> {
    match cmd {
        SnapshotCommand::Create { target, name } => create(client, json, target, name).await,
        SnapshotCommand::Ls { target } => ls(client, json, target.as_deref()).await,
        SnapshotCommand::Rm { ids } => rm(client, json, ids).await,
    }
}

async fn create(client: &Client, json: bool, target: &str, name: &Option<String>) -> Result<i32> {
    let url = client.url(&["v2", "box", target, "snapshots"]);
    let req = CreateSnapshotRequest { name: name.clone() };
    let v: serde_json::Value = client
        .json(client.request(Method::POST, url).json(&req))
        .await?;
    if json {
        print_json(&v)?;
    } else {
        let id = v["id"]
            .as_str()
            .ok_or_else(|| anyhow!("boxd answered the snapshot without an id: {v}"))?;
        out(format!("{id}\n"))?;
    }
    Ok(0)
}

/// The rows of `boxd snapshot ls`.
pub fn ls_table(snapshots: &[Snapshot], now: i64) -> String {
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                table::or_dash(&s.name),
                s.box_id.clone(),
                table::bytes(u64::try_from(s.size_bytes).unwrap_or(0)),
                s.status.clone(),
                table::age(now, s.created_at),
            ]
        })
        .collect();
    table::render(&["ID", "NAME", "BOX", "SIZE", "STATUS", "CREATED"], &rows)
}

async fn ls(client: &Client, json: bool, target: Option<&str>) -> Result<i32> {
    let url = match target {
        Some(b) => client.url(&["v2", "box", b, "snapshots"]),
        None => client.url(&["v2", "box", "snapshots"]),
    };
    let v: serde_json::Value = client.json(client.request(Method::GET, url)).await?;
    if json {
        print_json(&v)?;
    } else {
        let list: SnapshotsResponse =
            serde_json::from_value(v).context("boxd's snapshot list has an unexpected shape")?;
        out(ls_table(&list.snapshots, table::now_secs()))?;
    }
    Ok(0)
}

async fn rm(client: &Client, json: bool, ids: &[String]) -> Result<i32> {
    delete_each(client, json, "snapshot", ids, |id| {
        vec!["v2", "box", "snapshots", id]
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_shows_one_row_per_snapshot_with_sizes_for_people() {
        let snap = |id: &str, name: &str, size: i64, status: &str| Snapshot {
            id: id.into(),
            name: name.into(),
            box_id: "box-1".into(),
            size_bytes: size,
            status: status.into(),
            created_at: 1_000_000 - 7200,
            runtime: "host".into(),
        };
        assert_eq!(
            ls_table(
                &[
                    snap("snap-a", "base", 3 << 20, "ready"),
                    snap("snap-b", "", 12, "creating"),
                ],
                1_000_000
            ),
            "ID      NAME  BOX    SIZE     STATUS    CREATED\n\
             snap-a  base  box-1  3.0 MiB  ready     2h ago\n\
             snap-b  -     box-1  12 B     creating  2h ago\n"
        );
    }
}
