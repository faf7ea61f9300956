//! Result tables (markdown, printed and written to the docs) and the
//! rewrite of this bench's own section of `docs/BENCHMARKS.md`, between
//! `<!-- compare:begin -->` and `<!-- compare:end -->`. Nothing outside
//! the markers is ever changed.

use anyhow::{bail, Context, Result};
use std::path::Path;

pub const BEGIN: &str = "<!-- compare:begin -->";
pub const END: &str = "<!-- compare:end -->";

pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Sentences printed under the table.
    pub notes: Vec<String>,
    /// Whether boxd produced a result (the bench's only assertion).
    pub boxd_measured: bool,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
            boxd_measured: false,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A row for a peer that did not run: its name, then the reason
    /// spanning the first value column.
    pub fn skipped(&mut self, name: &str, why: &str) {
        let mut cells = vec![name.to_string(), format!("skipped: {why}")];
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut s = format!("#### {}\n\n", self.title);
        s += &format!("| {} |\n", self.header.join(" | "));
        s += &format!("|{}\n", "---|".repeat(self.header.len()));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| esc(c)).collect();
            s += &format!("| {} |\n", cells.join(" | "));
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s += &format!("- {n}\n");
            }
        }
        s
    }
}

/// Replaces the text between the markers in `path` with `body` (the
/// markers stay). If the file has no markers, the section is appended.
pub fn rewrite_section(path: &Path, body: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let section = format!("{BEGIN}\n{}\n{END}", body.trim_end());
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &text[..b], &text[e + END.len()..])
        }
        (None, None) => format!("{}\n\n{section}\n", text.trim_end()),
        _ => bail!(
            "{} has only one of the markers {BEGIN} / {END}, or them in the wrong order",
            path.display()
        ),
    };
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))
}
