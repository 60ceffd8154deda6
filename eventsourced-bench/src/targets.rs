//! The targets, checked against the results of the same run. A missed
//! target is reported, not an error: performance is judged by people reading
//! the numbers, correctness by the exit code.

use crate::{Scale, report::Record};
use std::fmt::Write as _;

/// The raw sequential ceiling that `seq 1x2000` is held against, per backend.
const RAW_SEQUENTIAL: [(&str, &str); 3] = [
    ("postgres", "raw insert 1-row"),
    ("nats", "raw publish sequential"),
    ("sqlite", "raw commit 1-row"),
];

/// The raw sequential ceiling with what the log's design adds to each
/// append before any work of the runtime: commit-ordered positions
/// (PostgreSQL), a blocking connection behind an async API (SQLite).
const RAW_SEQUENTIAL_AS_DESIGNED: [(&str, &str); 2] = [
    ("postgres", "raw insert 1-row ordered"),
    ("sqlite", "raw commit 1-row via a thread"),
];

/// The raw read ceiling that `recovery 100x200` is held against, per
/// backend: the fastest plain read of the same events.
const RAW_READ: [(&str, &str); 3] = [
    ("postgres", "raw read 100x200"),
    ("nats", "raw read 100x200 1 consumer"),
    ("sqlite", "raw read 100x200"),
];

/// The raw ceiling of many entities' writes that `seq 100x200` is held
/// against, per backend: one row (or message) per entity per commit
/// (PostgreSQL, SQLite); pipelined publishes over 100 subjects (NATS).
const RAW_MANY: [(&str, &str); 3] = [
    ("postgres", "raw insert 100-entity"),
    ("nats", "raw publish pipelined"),
    ("sqlite", "raw commit 100-entity tx"),
];

/// Minimum commands/s of `seq 100x200`.
const SEQ_100: [(&str, f64); 3] = [
    ("postgres", 110_000.0),
    ("nats", 200_000.0),
    ("sqlite", 100_000.0),
];

/// The raw batched ceiling that `hot` is held against: one entity's events,
/// 100 rows per commit (hot's commits hold at most 64, one per sender, and a
/// commit of fewer rows writes fewer rows per second). NATS has none: hot
/// publishes one message of up to 64 events, the raw ceiling one event per
/// message.
const RAW_BATCHED: [(&str, &str); 2] = [
    ("postgres", "raw insert 100-row"),
    ("sqlite", "raw commit 100-row tx"),
];

/// Minimum commands/s of `hot`.
const HOT: [(&str, f64); 4] = [
    ("postgres", 60_000.0),
    ("nats", 250_000.0),
    ("sqlite", 200_000.0),
    ("memory", 1_000_000.0),
];

fn find<'r>(records: &'r [Record], backend: &str, workload: &str) -> Option<&'r Record> {
    records
        .iter()
        .find(|r| r.backend == backend && r.workload == workload)
}

fn verdict(met: bool) -> &'static str {
    if met { "met   " } else { "MISSED" }
}

/// One line per target that this run has numbers for.
pub(crate) fn check(records: &[Record], scale: &Scale) -> String {
    if scale.quick {
        return "targets: not checked with --quick (they are for the full scale)\n".to_owned();
    }
    let mut lines = Vec::new();
    let mut backends: Vec<&str> = records.iter().map(|r| r.backend).collect();
    backends.dedup();
    for backend in backends {
        if let Some((_, raw_name)) = RAW_SEQUENTIAL.iter().find(|(b, _)| *b == backend)
            && let (Some(seq), Some(raw)) = (
                find(records, backend, "seq 1x2000").and_then(|r| r.commands_per_s),
                find(records, backend, raw_name).and_then(|r| r.commands_per_s),
            )
        {
            let ratio = seq / raw;
            lines.push(format!(
                "{} {backend}: seq 1x2000 {seq:.0}/s = {:.0}% of {raw_name} {raw:.0}/s (target >= 90%)",
                verdict(ratio >= 0.9),
                ratio * 100.0
            ));
        }
        if let (Some(seq), Some(log)) = (
            find(records, backend, "seq 1x2000").and_then(|r| r.commands_per_s),
            find(records, backend, "log append 1-event").and_then(|r| r.commands_per_s),
        ) {
            let ratio_to = |ceilings: &[(&str, &str)]| {
                ceilings
                    .iter()
                    .find(|(b, _)| *b == backend)
                    .and_then(|(_, raw_name)| {
                        let raw = find(records, backend, raw_name)?.commands_per_s?;
                        Some(format!(", {:.0}% of {raw_name}", log / raw * 100.0))
                    })
                    .unwrap_or_default()
            };
            let raw = format!(
                "{}{}",
                ratio_to(&RAW_SEQUENTIAL).replacen(", ", ", the log's appends ", 1),
                ratio_to(&RAW_SEQUENTIAL_AS_DESIGNED)
            );
            lines.push(format!(
                "info   {backend}: seq 1x2000 runs at {:.0}% of the log's own sequential appends ({log:.0}/s){raw}",
                seq / log * 100.0
            ));
        }
        if let Some((_, min)) = SEQ_100.iter().find(|(b, _)| *b == backend)
            && let Some(rate) = find(records, backend, "seq 100x200").and_then(|r| r.commands_per_s)
        {
            lines.push(format!(
                "{} {backend}: seq 100x200 {rate:.0}/s (target >= {min:.0}/s)",
                verdict(rate >= *min)
            ));
            if let Some((_, raw_name)) = RAW_MANY.iter().find(|(b, _)| *b == backend)
                && let Some(raw) = find(records, backend, raw_name).and_then(|r| r.commands_per_s)
            {
                lines.push(format!(
                    "info   {backend}: seq 100x200 runs at {:.0}% of {raw_name} {raw:.0} rows/s",
                    rate / raw * 100.0
                ));
            }
        }
        if let Some((_, min)) = HOT.iter().find(|(b, _)| *b == backend)
            && let Some(rate) =
                find(records, backend, "hot 64 senders").and_then(|r| r.commands_per_s)
        {
            lines.push(format!(
                "{} {backend}: hot {rate:.0}/s (target >= {min:.0}/s)",
                verdict(rate >= *min)
            ));
            if let Some((_, raw_name)) = RAW_BATCHED.iter().find(|(b, _)| *b == backend)
                && let Some(raw) = find(records, backend, raw_name).and_then(|r| r.commands_per_s)
            {
                lines.push(format!(
                    "info   {backend}: hot runs at {:.0}% of {raw_name} {raw:.0} rows/s",
                    rate / raw * 100.0
                ));
            }
        }
        for workload in ["recovery 100x200", "recovery 100x200 snap/64"] {
            if let Some(ms) = find(records, backend, workload).and_then(|r| r.recovery_ms) {
                lines.push(format!(
                    "{} {backend}: {workload} {ms:.1} ms, state verified (target <= 30 ms)",
                    verdict(ms <= 30.0)
                ));
            }
        }
        if let Some((_, raw_name)) = RAW_READ.iter().find(|(b, _)| *b == backend)
            && let (Some(recovery), Some(raw)) = (
                find(records, backend, "recovery 100x200").and_then(|r| r.recovery_ms),
                find(records, backend, raw_name).and_then(|r| r.recovery_ms),
            )
        {
            lines.push(format!(
                "info   {backend}: recovery 100x200 takes {:.1}x the {raw_name} of the same events ({raw:.1} ms)",
                recovery / raw
            ));
        }
        if matches!(backend, "sqlite" | "postgres")
            && let Some(rate) =
                find(records, backend, "recovery 1x100000").and_then(|r| r.events_per_s)
        {
            lines.push(format!(
                "{} {backend}: replay of 100000 events {rate:.0} events/s (target >= 1000000/s)",
                verdict(rate >= 1_000_000.0)
            ));
        }
        if let Some(bytes) =
            find(records, backend, "idle 100000").and_then(|r| r.rss_bytes_per_entity)
        {
            lines.push(format!(
                "{} {backend}: idle {bytes:.0} B of RSS per entity (target <= 2048 B beyond its 8 B state)",
                verdict(bytes <= 2048.0 + 8.0)
            ));
        }
    }
    let mut out = String::from("targets:\n");
    for line in lines {
        let _ = writeln!(out, "  {line}");
    }
    out
}
