//! Human output: aligned text tables, ages ("3m ago") and byte sizes.
//!
//! Owns formatting only. It never does I/O and never decides what goes into
//! a table; callers pass the rows and print the returned string.

use std::time::{SystemTime, UNIX_EPOCH};

/// Renders `rows` under `headers` as left-aligned columns separated by two
/// spaces, one line per row, without trailing spaces. Widths count
/// characters, not bytes.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let n = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Now, in unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long ago `then` was, both in unix seconds: `12s ago`, `3m ago`,
/// `5h ago`, `2d ago`. A time in the future (clock skew) reads `just now`.
pub fn age(now: i64, then: i64) -> String {
    let d = now.saturating_sub(then);
    if d < 1 {
        "just now".to_string()
    } else if d < 60 {
        format!("{d}s ago")
    } else if d < 3600 {
        format!("{}m ago", d / 60)
    } else if d < 86400 {
        format!("{}h ago", d / 3600)
    } else {
        format!("{}d ago", d / 86400)
    }
}

/// Unix seconds as `2026-01-02 03:04:05 UTC` (proleptic Gregorian).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `-` for an empty cell, so columns never look shifted.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_spaces() {
        let t = render(
            &["ID", "NAME", "STATUS"],
            &[
                vec!["box_1".into(), "a".into(), "running".into()],
                vec!["box_22".into(), "longer-name".into(), "idle".into()],
            ],
        );
        assert_eq!(
            t,
            "ID      NAME         STATUS\n\
             box_1   a            running\n\
             box_22  longer-name  idle\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let t = render(&["N", "X"], &[vec!["é".into(), "1".into()]]);
        assert_eq!(t, "N  X\né  1\n");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(render(&["ID", "NAME"], &[]), "ID  NAME\n");
    }

    #[test]
    fn ages_read_like_people_say_them() {
        assert_eq!(age(100, 100), "just now");
        assert_eq!(age(100, 200), "just now");
        assert_eq!(age(100, 88), "12s ago");
        assert_eq!(age(1000, 1000 - 180), "3m ago");
        assert_eq!(age(100_000, 100_000 - 5 * 3600 - 10), "5h ago");
        assert_eq!(age(1_000_000, 1_000_000 - 2 * 86400), "2d ago");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
