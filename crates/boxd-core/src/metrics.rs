//! Prometheus metrics (`GET /metrics`): boxes by state, exec count and
//! latency, create latency, pauses and resumes, expiries, box CPU time.
//!
//! Owns the metric registry. Labels are fixed, low-cardinality words
//! (never box ids, commands, paths or any value a user supplied).

use boxd_store::BoxState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    /// `exec`, `exec_stream`, `code` or `code_stream`.
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    /// `ok` or `error`.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifecycleLabel {
    /// `pause` or `resume`.
    op: String,
    /// `api`, `auto` or `idle`.
    reason: String,
}

pub struct Metrics {
    registry: Registry,
    boxes: Family<StateLabel, Gauge>,
    execs: Family<KindLabel, Counter>,
    exec_seconds: Histogram,
    creates: Family<OutcomeLabel, Counter>,
    create_seconds: Histogram,
    lifecycle: Family<LifecycleLabel, Counter>,
    lifecycle_seconds: Histogram,
    expirations: Counter,
    cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("boxd");
        let boxes = Family::<StateLabel, Gauge>::default();
        let execs = Family::<KindLabel, Counter>::default();
        // 100 µs .. ~52 s.
        let exec_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        let creates = Family::<OutcomeLabel, Counter>::default();
        let create_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register("boxes", "Boxes by state", boxes.clone());
        registry.register(
            "execs",
            "Commands run in boxes (exec, exec stream, code)",
            execs.clone(),
        );
        registry.register(
            "exec_duration_seconds",
            "Wall time of commands run in boxes",
            exec_seconds.clone(),
        );
        registry.register("box_creates", "Box creations by outcome", creates.clone());
        registry.register(
            "box_create_duration_seconds",
            "Time from a create request to a running box",
            create_seconds.clone(),
        );
        let lifecycle = Family::<LifecycleLabel, Counter>::default();
        // 10 µs .. ~5 s.
        let lifecycle_seconds = Histogram::new(exponential_buckets(0.00001, 2.0, 20));
        let expirations = Counter::default();
        let cpu_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "box_lifecycle",
            "Box pauses and resumes by reason (api, auto, idle)",
            lifecycle.clone(),
        );
        registry.register(
            "box_lifecycle_duration_seconds",
            "Time to freeze or thaw a box",
            lifecycle_seconds.clone(),
        );
        registry.register(
            "box_expirations",
            "Boxes deleted because their lifetime ended",
            expirations.clone(),
        );
        registry.register(
            "box_cpu_seconds",
            "CPU time used so far by the boxes that exist now (from their cgroups)",
            cpu_seconds.clone(),
        );
        Metrics {
            lifecycle,
            lifecycle_seconds,
            expirations,
            cpu_seconds,
            registry,
            boxes,
            execs,
            exec_seconds,
            creates,
            create_seconds,
        }
    }

    pub fn exec_done(&self, kind: &str, took: Duration) {
        self.execs
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
        self.exec_seconds.observe(took.as_secs_f64());
    }

    pub fn create_done(&self, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.creates
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        if ok {
            self.create_seconds.observe(took.as_secs_f64());
        }
    }

    pub fn lifecycle_done(&self, op: &str, reason: &str, took: Duration) {
        self.lifecycle
            .get_or_create(&LifecycleLabel {
                op: op.into(),
                reason: reason.into(),
            })
            .inc();
        self.lifecycle_seconds.observe(took.as_secs_f64());
    }

    pub fn expired(&self) {
        self.expirations.inc();
    }

    /// The exposition text, with the box counts and the boxes' CPU time
    /// (nanoseconds) as of now.
    pub fn render(&self, counts: &[(BoxState, i64)], cpu_ns: u64) -> String {
        self.cpu_seconds.set(cpu_ns as f64 / 1e9);
        for state in BoxState::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.boxes
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(n);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
