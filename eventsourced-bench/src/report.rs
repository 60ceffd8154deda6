//! One result line, latency percentiles, memory readings, and the output: a
//! readable table or one JSON object per result.

use serde::{Deserialize, Serialize};
use std::{fmt::Write as _, time::Duration};

/// One result line of the benchmark. `None` fields are `null` in JSON and `-`
/// in the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Not read back from JSON (a `&'static str`): whoever reads a record
    /// sets it.
    #[serde(skip_deserializing)]
    pub(crate) backend: &'static str,
    pub(crate) workload: String,
    /// Commands (or raw writes, or spawned entities for `idle`).
    pub(crate) commands: u64,
    pub(crate) seconds: f64,
    pub(crate) commands_per_s: Option<f64>,
    pub(crate) p50_us: Option<u32>,
    pub(crate) p99_us: Option<u32>,
    /// Time from spawning until the first reply of every entity (`recovery`).
    pub(crate) recovery_ms: Option<f64>,
    /// Events replayed per second (`recovery`).
    pub(crate) events_per_s: Option<f64>,
    /// The process's peak RSS during this run (VmHWM, reset before the run
    /// where the kernel allows it).
    pub(crate) peak_rss_kib: Option<u64>,
    /// RSS growth per spawned entity (`idle`).
    pub(crate) rss_bytes_per_entity: Option<f64>,
    /// The share of the machine's CPU time that the hypervisor gave to
    /// others while this run ran (`steal` of /proc/stat), in percent: a
    /// virtual machine's runs are comparable only at similar steal.
    pub(crate) steal_pct: Option<f64>,
    /// A short remark, e.g. what a raw ceiling writes.
    pub(crate) note: String,
    /// Which run of `--runs` measured it (1-based).
    pub(crate) run: u32,
}

impl Record {
    /// A record for `commands` done in `elapsed`, with their latencies.
    pub(crate) fn throughput(
        backend: &'static str,
        workload: impl Into<String>,
        commands: u64,
        elapsed: Duration,
        latencies_us: &mut [u32],
    ) -> Self {
        let seconds = elapsed.as_secs_f64();
        let (p50_us, p99_us) = percentiles(latencies_us);
        Record {
            backend,
            workload: workload.into(),
            commands,
            seconds,
            commands_per_s: Some(per_second(commands, seconds)),
            p50_us,
            p99_us,
            recovery_ms: None,
            events_per_s: None,
            peak_rss_kib: None,
            rss_bytes_per_entity: None,
            steal_pct: None,
            note: String::new(),
            run: 1,
        }
    }

    /// A record of reading `events` events of `entities` entities in
    /// `elapsed` (a recovery, or a raw read of the same events); `latencies_us`
    /// is per entity.
    pub(crate) fn replay(
        backend: &'static str,
        workload: impl Into<String>,
        entities: u64,
        events: u64,
        elapsed: Duration,
        latencies_us: &mut [u32],
    ) -> Self {
        let mut record = Record::throughput(backend, workload, entities, elapsed, latencies_us);
        record.commands_per_s = None;
        record.recovery_ms = Some(elapsed.as_secs_f64() * 1000.0);
        record.events_per_s = Some(per_second(events, elapsed.as_secs_f64()));
        record
    }

    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// `count / seconds`, 0 for an empty interval.
pub(crate) fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        // Counts stay far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let count = count as f64;
        count / seconds
    } else {
        0.0
    }
}

/// Microseconds of `elapsed`, saturating at `u32::MAX` (71 minutes).
pub(crate) fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// p50 and p99 of the latencies (sorted in place), by the nearest-rank method.
pub(crate) fn percentiles(latencies_us: &mut [u32]) -> (Option<u32>, Option<u32>) {
    if latencies_us.is_empty() {
        return (None, None);
    }
    latencies_us.sort_unstable();
    let rank = |p: usize| {
        let n = latencies_us.len();
        // Nearest rank: ceil(p/100 * n), 1-based.
        let index = (p * n).div_ceil(100).clamp(1, n) - 1;
        latencies_us[index]
    };
    (Some(rank(50)), Some(rank(99)))
}

/// A field of /proc/self/status in KiB, e.g. `VmRSS` or `VmHWM`.
pub(crate) fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Clock ticks (usually 10 ms each, summed over the CPUs) a steal share
/// needs: shorter runs would report one tick's rounding.
const MIN_TICKS: u64 = 50;

/// The machine's CPU time counters (all CPUs, in clock ticks) of
/// /proc/stat: stolen by the hypervisor, and in all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTimes {
    steal: u64,
    total: u64,
}

impl CpuTimes {
    /// Now; `None` where /proc/stat has no such line (not Linux).
    pub(crate) fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is
        // counted in user and nice already).
        Some(CpuTimes {
            steal: *fields.get(7)?,
            total: fields.iter().take(8).sum(),
        })
    }

    /// The percentage of the CPU time since `earlier` that was stolen;
    /// `None` for less than [`MIN_TICKS`] of CPU time, too short to say.
    pub(crate) fn steal_since(self, earlier: Option<CpuTimes>) -> Option<f64> {
        let earlier = earlier?;
        let total = self
            .total
            .checked_sub(earlier.total)
            .filter(|t| *t >= MIN_TICKS)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        // Clock ticks stay far below 2^52: the conversions are exact.
        #[allow(clippy::cast_precision_loss)]
        Some(steal as f64 / total as f64 * 100.0)
    }
}

/// Resets the peak RSS (VmHWM) to the current RSS, so that the next reading
/// is the peak of the next run only. Returns whether the kernel allowed it.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn cell_f(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn cell_u<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The results as an aligned, readable table.
pub(crate) fn table(records: &[Record]) -> String {
    let header = [
        "backend",
        "workload",
        "commands",
        "seconds",
        "cmd/s",
        "p50 µs",
        "p99 µs",
        "recovery ms",
        "events/s",
        "peak RSS KiB",
        "B/entity",
        "steal %",
        "note",
    ];
    let rows: Vec<[String; 13]> = records
        .iter()
        .map(|r| {
            [
                r.backend.to_owned(),
                r.workload.clone(),
                r.commands.to_string(),
                format!("{:.3}", r.seconds),
                cell_f(r.commands_per_s, 0),
                cell_u(r.p50_us),
                cell_u(r.p99_us),
                cell_f(r.recovery_ms, 1),
                cell_f(r.events_per_s, 0),
                cell_u(r.peak_rss_kib),
                cell_f(r.rss_bytes_per_entity, 0),
                cell_f(r.steal_pct, 0),
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = width.saturating_sub(cell.chars().count());
            // Text columns left-aligned, numbers right-aligned.
            if i < 2 || i == 12 {
                let _ = write!(text, "| {cell}{} ", " ".repeat(pad));
            } else {
                let _ = write!(text, "| {}{cell} ", " ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push_str(" |\n");
    };
    line(&header.map(str::to_owned));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &rows {
        line(row);
    }
    out
}

/// What a result is judged by: commands/s, else recovery ms, else bytes per
/// entity.
struct Measure {
    value: f64,
    more_is_better: bool,
    unit: &'static str,
    decimals: usize,
}

fn measure(record: &Record) -> Option<Measure> {
    let of = |value, more_is_better, unit, decimals| Measure {
        value,
        more_is_better,
        unit,
        decimals,
    };
    record
        .commands_per_s
        .map(|v| of(v, true, "/s", 0))
        .or(record.recovery_ms.map(|v| of(v, false, " ms", 1)))
        .or(record.rss_bytes_per_entity.map(|v| of(v, false, " B", 0)))
}

/// One record per (backend, workload), in the order first measured: the run
/// with the median result, its note saying the range over all runs. With an
/// even number of runs the worse of the two middle ones is taken. A single
/// run is returned as it is.
pub(crate) fn medians(records: &[Record]) -> Vec<Record> {
    let mut groups: Vec<Vec<&Record>> = Vec::new();
    for record in records {
        match groups
            .iter_mut()
            .find(|g| g[0].backend == record.backend && g[0].workload == record.workload)
        {
            Some(group) => group.push(record),
            None => groups.push(vec![record]),
        }
    }
    groups
        .into_iter()
        .map(|mut group| {
            if group.len() == 1 {
                return group[0].clone();
            }
            let Some(Measure {
                more_is_better,
                unit,
                decimals,
                ..
            }) = measure(group[0])
            else {
                return group[0].clone();
            };
            let value = |r: &Record| measure(r).map_or(f64::NAN, |m| m.value);
            group.sort_by(|a, b| value(a).total_cmp(&value(b)));
            let n = group.len();
            let index = if more_is_better { (n - 1) / 2 } else { n / 2 };
            let mut median = group[index].clone();
            let (low, high) = (value(group[0]), value(group[n - 1]));
            let range = format!(
                "median of {n} runs, range {low:.decimals$}{unit} to {high:.decimals$}{unit}"
            );
            median.note = if median.note.is_empty() {
                range
            } else {
                format!("{range}; {}", median.note)
            };
            median
        })
        .collect()
}

/// One JSON object for a result line.
pub(crate) fn json_line(record: &Record) -> String {
    serde_json::to_string(record)
        .unwrap_or_else(|error| format!("{{\"error\":\"cannot serialize a result: {error}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_a_share_of_the_time_between_two_readings() {
        let before = CpuTimes {
            steal: 100,
            total: 1000,
        };
        let after = CpuTimes {
            steal: 125,
            total: 1100,
        };
        assert_eq!(after.steal_since(Some(before)), Some(25.0));
        // Too short a run, a missing or a later reading: nothing to say.
        let soon = CpuTimes {
            steal: 101,
            total: 1010,
        };
        assert_eq!(soon.steal_since(Some(before)), None);
        assert_eq!(after.steal_since(None), None);
        assert_eq!(before.steal_since(Some(after)), None);
        assert!(CpuTimes::read().is_some(), "/proc/stat has a cpu line");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut values), (Some(50), Some(99)));
        assert_eq!(percentiles(&mut [7]), (Some(7), Some(7)));
        assert_eq!(percentiles(&mut []), (None, None));
    }

    fn record(
        workload: &str,
        commands_per_s: Option<f64>,
        recovery_ms: Option<f64>,
        run: u32,
    ) -> Record {
        let mut record = Record::throughput("memory", workload, 1, Duration::from_secs(1), &mut []);
        record.commands_per_s = commands_per_s;
        record.recovery_ms = recovery_ms;
        record.run = run;
        record
    }

    #[test]
    fn medians_take_the_middle_run_and_name_the_range() {
        let records = vec![
            record("seq", Some(300.0), None, 1),
            record("rec", None, Some(9.0), 1),
            record("seq", Some(100.0), None, 2),
            record("rec", None, Some(30.0), 2),
            record("seq", Some(200.0), None, 3),
            record("rec", None, Some(10.0), 3),
        ];
        let medians = medians(&records);
        assert_eq!(medians.len(), 2);
        assert_eq!(medians[0].workload, "seq");
        assert_eq!(medians[0].commands_per_s, Some(200.0));
        assert_eq!(medians[0].run, 3);
        assert!(
            medians[0]
                .note
                .starts_with("median of 3 runs, range 100/s to 300/s"),
            "{}",
            medians[0].note
        );
        assert_eq!(medians[1].recovery_ms, Some(10.0));
        assert!(
            medians[1].note.contains("9.0 ms to 30.0 ms"),
            "{}",
            medians[1].note
        );
    }

    #[test]
    fn medians_of_two_runs_take_the_worse() {
        let records = vec![
            record("seq", Some(300.0), None, 1),
            record("seq", Some(100.0), None, 2),
            record("rec", None, Some(9.0), 1),
            record("rec", None, Some(30.0), 2),
        ];
        let medians = medians(&records);
        assert_eq!(medians[0].commands_per_s, Some(100.0));
        assert_eq!(medians[1].recovery_ms, Some(30.0));
    }

    #[test]
    fn one_run_is_reported_as_measured() {
        let records = vec![record("seq", Some(300.0), None, 1)];
        let medians = medians(&records);
        assert_eq!(medians[0].note, "");
        assert_eq!(medians[0].commands_per_s, Some(300.0));
    }

    #[test]
    fn proc_status_has_rss() {
        assert!(proc_status_kib("VmRSS").is_some_and(|kib| kib > 0));
        assert!(proc_status_kib("VmNope").is_none());
    }
}
