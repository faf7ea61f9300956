//! `boxd headers set|ls|rm`: the team's attach headers over the API.
//!
//! Owns reading values from stdin (never from arguments, which other users
//! and shell history see). Never prints a value: the API does not return
//! them, and nothing read from stdin is echoed.

use super::client::Client;
use super::commands::print_json;
use super::{out, table, HeadersCommand};
use anyhow::{bail, Context, Result};
use boxd_api::AttachHeadersResponse;
use reqwest::Method;
use std::io::BufRead;
use zeroize::Zeroizing;

pub async fn run(client: &Client, json: bool, cmd: &HeadersCommand) -> Result<i32> {
    let listing: AttachHeadersResponse = match cmd {
        HeadersCommand::Set { pattern, names } => {
            let values = read_values(names.len())?;
            let mut body = serde_json::Map::new();
            for (name, value) in names.iter().zip(values.iter()) {
                body.insert(name.clone(), serde_json::Value::String(value.to_string()));
            }
            let url = client.url(&["v2", "box", "settings", "attach-headers", pattern]);
            let req = client.request(Method::PUT, url).json(&body);
            drop(body);
            client.json(req).await?
        }
        HeadersCommand::Ls => {
            let url = client.url(&["v2", "box", "settings", "attach-headers"]);
            client.json(client.request(Method::GET, url)).await?
        }
        HeadersCommand::Rm { pattern } => {
            let url = client.url(&["v2", "box", "settings", "attach-headers", pattern]);
            client.json(client.request(Method::DELETE, url)).await?
        }
    };
    if json {
        print_json(&listing)?;
    } else {
        let rows: Vec<Vec<String>> = listing
            .attach_headers
            .iter()
            .map(|(pattern, names)| vec![pattern.clone(), names.join(", ")])
            .collect();
        out(table::render(&["PATTERN", "HEADERS"], &rows))?;
    }
    Ok(0)
}

/// `n` lines from stdin, without their line ends.
fn read_values(n: usize) -> Result<Vec<Zeroizing<String>>> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let mut line = Zeroizing::new(String::new());
        let read = lines
            .read_line(&mut line)
            .context("read header values from stdin")?;
        if read == 0 {
            bail!("stdin ended after {i} of {n} values: give one line per header name, in order");
        }
        let trimmed = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(trimmed);
        values.push(line);
    }
    Ok(values)
}
