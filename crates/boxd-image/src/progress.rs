//! Progress of a build or an import, as events a front end shows (the
//! CLI draws a status line on a terminal and plain lines otherwise; the
//! API streams them). Builders report; they never print.

use serde::Serialize;

/// One thing a build or import has got to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A new step started (`base: mmdebstrap trixie`, `layer 2/5`, …).
    Step { step: String },
    /// Packages a step installs (known when the package manager says).
    Packages { count: u64 },
    /// Bytes fetched or written so far by the current step.
    Bytes { bytes: u64 },
    /// A line of a tool's own output, for the log.
    Log { line: String },
    /// The step reused a cached result instead of doing the work.
    Cached { step: String },
}

/// Where events go.
pub type Progress<'a> = &'a mut (dyn FnMut(Event) + Send);
