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

/// The raw batched ceilings that `hot` is held against: one entity's
/// events, 64 rows per commit (hot's commits hold at most 64, one per
/// sender: the ceiling of its shape), and 100 rows per commit. NATS has
/// none: hot publishes one message of up to 64 events, the raw ceiling one
/// event per message.
const RAW_BATCHED: [(&str, [&str; 2]); 2] = [
    ("postgres", ["raw insert 64-row", "raw insert 100-row"]),
    ("sqlite", ["raw commit 64-row tx", "raw commit 100-row tx"]),
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
            // "N% of <ceiling>" for each ceiling this backend has.
            let ratios: Vec<String> = [&RAW_SEQUENTIAL[..], &RAW_SEQUENTIAL_AS_DESIGNED[..]]
                .iter()
                .filter_map(|ceilings| {
                    let (_, raw_name) = ceilings.iter().find(|(b, _)| *b == backend)?;
                    let raw = find(records, backend, raw_name)?.commands_per_s?;
                    Some(format!("{:.0}% of {raw_name}", log / raw * 100.0))
                })
                .collect();
            let raw = if ratios.is_empty() {
                String::new()
            } else {
                format!(", the log's appends {}", ratios.join(", "))
            };
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
            if let Some((_, raw_names)) = RAW_BATCHED.iter().find(|(b, _)| *b == backend) {
                let ratios: Vec<String> = raw_names
                    .iter()
                    .filter_map(|raw_name| {
                        let raw = find(records, backend, raw_name)?.commands_per_s?;
                        Some(format!(
                            "{:.0}% of {raw_name} {raw:.0} rows/s",
                            rate / raw * 100.0
                        ))
                    })
                    .collect();
                if !ratios.is_empty() {
                    lines.push(format!(
                        "info   {backend}: hot runs at {}",
                        ratios.join(", ")
                    ));
                }
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

#[cfg(test)]
mod tests {
    use super::check;
    use crate::{Scale, report::Record};
    use std::time::Duration;

    /// `commands` done in one second: `commands`/s.
    fn rate(backend: &'static str, workload: &str, commands: u64) -> Record {
        Record::throughput(backend, workload, commands, Duration::from_secs(1), &mut [])
    }

    fn read(backend: &'static str, workload: &str, millis: u64) -> Record {
        Record::replay(
            backend,
            workload,
            100,
            20_000,
            Duration::from_millis(millis),
            &mut [],
        )
    }

    #[test]
    fn each_result_is_held_against_its_raw_ceiling() {
        let records = [
            rate("sqlite", "log append 1-event", 1600),
            rate("sqlite", "raw commit 1-row", 3200),
            rate("sqlite", "raw commit 1-row via a thread", 2000),
            rate("sqlite", "seq 1x2000", 1200),
            rate("sqlite", "raw commit 100-entity tx", 40_000),
            rate("sqlite", "seq 100x200", 30_000),
            rate("sqlite", "raw commit 100-row tx", 100_000),
            rate("sqlite", "raw commit 64-row tx", 80_000),
            rate("sqlite", "hot 64 senders", 50_000),
            read("sqlite", "raw read 100x200", 10),
            read("sqlite", "recovery 100x200", 25),
        ];
        let lines = check(&records, &Scale::new(false));
        for expected in [
            "MISSED sqlite: seq 1x2000 1200/s = 38% of raw commit 1-row 3200/s (target >= 90%)",
            "info   sqlite: seq 1x2000 runs at 75% of the log's own sequential appends (1600/s), the log's appends 50% of raw commit 1-row, 80% of raw commit 1-row via a thread",
            "info   sqlite: seq 100x200 runs at 75% of raw commit 100-entity tx 40000 rows/s",
            "info   sqlite: hot runs at 62% of raw commit 64-row tx 80000 rows/s, 50% of raw commit 100-row tx 100000 rows/s",
            "met    sqlite: recovery 100x200 25.0 ms, state verified (target <= 30 ms)",
            "info   sqlite: recovery 100x200 takes 2.5x the raw read 100x200 of the same events (10.0 ms)",
        ] {
            assert!(
                lines.contains(expected),
                "{expected:?} missing in:\n{lines}"
            );
        }
    }

    #[test]
    fn quick_runs_are_not_judged() {
        let records = [rate("memory", "hot 64 senders", 10)];
        assert!(check(&records, &Scale::new(true)).contains("not checked with --quick"));
    }
}
