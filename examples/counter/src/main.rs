//! The eventsourced demo: spawns counters, sends them commands, then respawns
//! them from their events and checks that nothing was lost.
//!
//! ```sh
//! cargo run --release -p counter                      # SQLite file ./counter.db, no server
//! cargo run --release -p counter                      # again: continues from the first run
//! cargo run --release -p counter -- --backend memory  # in memory, gone at exit
//! cargo run --release -p counter -- --backend postgres  # DATABASE_URL or 127.0.0.1:5432/test
//! cargo run --release -p counter -- --backend nats      # NATS_URL or 127.0.0.1:4222 (server >= 2.10)
//! cargo run --release -p counter -- --help
//! ```
//!
//! Each backend is one small function that builds its event log and snapshot
//! store and calls the generic [`run`]; adding a backend is adding an arm to
//! [`Backend`] and one such function.
//!
//! On SQLite the demo also keeps a read model, `counter_totals`, in the same
//! file with a projection (see `read_model.rs`), and checks it against the
//! counters.

mod read_model;

use clap::{Parser, ValueEnum};
use eventsourced::{
    Command, CommandEffect, EntityRef, EventLog, EventSourced, EventSourcedExt, MemoryEventLog,
    MemorySnapshotStore, SerdeJson, SnapshotStore,
};
use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
use eventsourced_postgres::{PostgresConfig, PostgresEventLog, PostgresSnapshotStore};
use eventsourced_sqlite::{Durability, SqliteConfig, SqliteEventLog};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use std::{
    error::Error,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

// The counter entity.

/// A counter that never goes below zero.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Counter(u64);

/// What happened to a counter.
#[derive(Debug, Serialize, Deserialize)]
enum CounterEvent {
    Increased(u64),
    Decreased(u64),
}

impl EventSourced for Counter {
    type Id = String;
    type Event = CounterEvent;
    const TYPE_NAME: &'static str = "counter";

    fn handle_event(self, event: CounterEvent) -> Self {
        match event {
            // The commands allow no event that would leave the range;
            // saturating keeps a log edited by hand from panicking replay.
            CounterEvent::Increased(n) => Counter(self.0.saturating_add(n)),
            CounterEvent::Decreased(n) => Counter(self.0.saturating_sub(n)),
        }
    }
}

/// Why a command was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CounterError {
    /// The counter would go below zero.
    Underflow,
    /// The counter would exceed `u64::MAX`.
    Overflow,
}

/// Adds to the counter; replies with the new value.
struct Increase(u64);

impl Command<Counter> for Increase {
    type Reply = u64;
    type Error = CounterError;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, CounterError> {
        if state.0.checked_add(self.0).is_none() {
            CommandEffect::reject(CounterError::Overflow)
        } else {
            CommandEffect::emit_and_reply(CounterEvent::Increased(self.0), |state: &Counter| {
                state.0
            })
        }
    }
}

/// Subtracts from the counter; replies with the new value, or rejects with
/// `Underflow`.
struct Decrease(u64);

impl Command<Counter> for Decrease {
    type Reply = u64;
    type Error = CounterError;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, CounterError> {
        if state.0 < self.0 {
            CommandEffect::reject(CounterError::Underflow)
        } else {
            CommandEffect::emit_and_reply(CounterEvent::Decreased(self.0), |state: &Counter| {
                state.0
            })
        }
    }
}

/// Replies with the value; emits nothing.
struct Get;

impl Command<Counter> for Get {
    type Reply = u64;
    type Error = CounterError;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, CounterError> {
        CommandEffect::reply(state.0)
    }
}

// The command line.

/// Spawns counters, sends them commands, respawns them from their events.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where events and snapshots are stored.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,

    /// The SQLite database file (sqlite backend); created if missing, never
    /// deleted: a second run continues from the first.
    #[arg(long, default_value = "counter.db")]
    db: PathBuf,

    /// SQLite durability: `full` survives OS crashes, `fast` only process
    /// crashes.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Full)]
    durability: DurabilityArg,

    /// How many counters to spawn.
    #[arg(long, default_value_t = 100)]
    counters: usize,

    /// How many commands to send to each counter (one after another).
    #[arg(long, default_value_t = 100)]
    commands: u64,

    /// Save a snapshot every this many events (0: never).
    #[arg(long, default_value_t = 50)]
    snapshot_every: u64,
}

/// The backends the demo can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// An SQLite file: durable, embedded, no server.
    Sqlite,
    /// In memory: fast, gone at exit.
    Memory,
    /// PostgreSQL at `DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/test).
    Postgres,
    /// NATS JetStream at `NATS_URL` (default nats://127.0.0.1:4222; server 2.10 or newer).
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    Full,
    Fast,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.backend {
        Backend::Sqlite => sqlite(&args).await,
        Backend::Memory => memory(&args).await,
        Backend::Postgres => postgres(&args).await,
        Backend::Nats => nats(&args).await,
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

// One function per backend: build the log and the snapshot store, then run.

async fn sqlite(args: &Args) -> Result<Summary, Box<dyn Error>> {
    let mut config = SqliteConfig::default();
    config.durability = match args.durability {
        DurabilityArg::Full => Durability::Full,
        DurabilityArg::Fast => Durability::Fast,
    };
    let log = SqliteEventLog::open_with(&args.db, config)?;
    let snapshots = log.snapshot_store();
    let path = log.path().unwrap_or(&args.db).display().to_string();
    let durability = match log.config().durability {
        Durability::Fast => "fast",
        _ => "full",
    };
    let label = format!("sqlite {path} ({durability} durability)");
    let summary = run(log.clone(), snapshots, args, &label).await?;

    // The read model, kept by a projection in the same file.
    let totals = read_model::catch_up(&log, &args.db).await?;
    let ids = (0..args.counters).map(|n| format!("counter-{n}"));
    let mismatches = ids
        .zip(&summary.recovered)
        .filter(|(id, value)| totals.values.get(id).copied().unwrap_or(0) != **value)
        .count();
    println!(
        "read model counter_totals: {} rows, {} events applied this run in {}, {}",
        totals.values.len(),
        totals.handled,
        millis(totals.caught_up_in),
        if mismatches == 0 {
            "every counter's total matches its value".to_owned()
        } else {
            format!("{mismatches} totals differ from their counters")
        }
    );
    if mismatches > 0 {
        return Err("the read model does not match the counters".into());
    }
    Ok(summary)
}

async fn postgres(args: &Args) -> Result<Summary, Box<dyn Error>> {
    let config = PostgresConfig::from_env()?;
    let log = PostgresEventLog::new(config.clone()).await?;
    log.setup().await?;
    let snapshots = PostgresSnapshotStore::new(config.clone()).await?;
    snapshots.setup().await?;
    let label = format!("postgres {}:{}/{}", config.host, config.port, config.dbname);
    run(log, snapshots, args, &label).await
}

async fn nats(args: &Args) -> Result<Summary, Box<dyn Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let config = NatsConfig::from_url(&url);
    let log = NatsEventLog::new(config.clone()).await?;
    log.setup().await?;
    let snapshots = NatsSnapshotStore::with_client(log.client().clone(), config).await?;
    snapshots.setup().await?;
    run(log, snapshots, args, &format!("nats {url}")).await
}

async fn memory(args: &Args) -> Result<Summary, Box<dyn Error>> {
    run(
        MemoryEventLog::default(),
        MemorySnapshotStore::default(),
        args,
        "memory",
    )
    .await
}

// The demo itself, the same for every backend.

/// Spawns `args.counters` counters on `log` and `snapshots`, sends each
/// `args.commands` commands, respawns them and checks their values.
async fn run<L: EventLog, S: SnapshotStore>(
    log: L,
    snapshots: S,
    args: &Args,
    backend: &str,
) -> Result<Summary, Box<dyn Error>> {
    let ids: Vec<String> = (0..args.counters).map(|n| format!("counter-{n}")).collect();
    println!("backend: {backend}");

    let events_before = events_on_disk(&log, &ids).await?;
    let started = Instant::now();
    let counters = spawn_all(&ids, &log, &snapshots, args.snapshot_every).await?;
    let startup = started.elapsed();
    let initial = values(&counters).await?;
    if events_before > 0 {
        println!(
            "continuing from the previous run: {events_before} events already stored, \
             counters recovered in {} with a total of {}",
            millis(startup),
            initial.iter().sum::<u64>()
        );
    } else {
        println!("fresh start: no events stored for these counters yet");
    }

    // Load: every counter gets its commands one after another, all counters
    // at once.
    let total = u64::try_from(counters.len())
        .ok()
        .and_then(|n| n.checked_mul(args.commands))
        .ok_or_else(|| {
            format!(
                "{} counters x {} commands is more commands than a u64 counts",
                counters.len(),
                args.commands
            )
        })?;
    println!(
        "sending {} commands to each of {} counters ({total} commands)...",
        args.commands,
        counters.len()
    );
    let done = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(report_progress(Arc::clone(&done), total));
    let started = Instant::now();
    let outcomes = try_join_all(counters.iter().zip(0..).map(|(counter, index)| {
        let done = Arc::clone(&done);
        let commands = args.commands;
        async move { drive(counter, index, commands, &done).await }
    }))
    .await?;
    let elapsed = started.elapsed();
    progress.abort();
    let rate = per_second(total, elapsed);
    let underflows: u64 = outcomes.iter().map(|o| o.underflows).sum();
    let overflows: u64 = outcomes.iter().map(|o| o.overflows).sum();
    println!(
        "{total} commands in {} ({rate:.0} commands/s), rejected: {underflows} with Underflow, \
         {overflows} with Overflow",
        millis(elapsed)
    );

    // Respawn from the log (and snapshots) and compare.
    drop(counters);
    let started = Instant::now();
    let counters = spawn_all(&ids, &log, &snapshots, args.snapshot_every).await?;
    let recovery = started.elapsed();
    let recovered = values(&counters).await?;
    let mismatches: Vec<_> = ids
        .iter()
        .zip(&recovered)
        .zip(&outcomes)
        .filter(|((_, value), outcome)| **value != outcome.last_value)
        .map(|((id, value), outcome)| format!("{id}: {value} != {}", outcome.last_value))
        .collect();
    let shown: Vec<String> = ids
        .iter()
        .zip(&recovered)
        .take(5)
        .map(|(id, value)| format!("{id}={value}"))
        .collect();
    println!(
        "respawned {} counters in {}: {}{}",
        counters.len(),
        millis(recovery),
        shown.join(", "),
        if counters.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    );
    if !mismatches.is_empty() {
        return Err(format!(
            "{} recovered counters differ from their last reply: {}",
            mismatches.len(),
            mismatches.join("; ")
        )
        .into());
    }
    println!(
        "all {} recovered values match the last replies",
        counters.len()
    );

    let events_after = events_on_disk(&log, &ids).await?;
    let stored_label = if backend == "memory" {
        "events in memory"
    } else {
        "events on disk"
    };
    print_summary(&[
        ("backend", backend.to_owned()),
        (
            "counters x commands",
            format!("{} x {}", counters.len(), args.commands),
        ),
        ("commands/s", format!("{rate:.0}")),
        (
            "recovery time",
            format!("{} ({} counters)", millis(recovery), counters.len()),
        ),
        (
            stored_label,
            format!(
                "{events_after} (+{} this run)",
                events_after.saturating_sub(events_before)
            ),
        ),
    ]);
    Ok(Summary {
        initial,
        events_before,
        events_after,
        recovered,
    })
}

/// What a run found and left (the tests compare runs).
#[derive(Debug)]
#[cfg_attr(not(test), expect(dead_code, reason = "only the tests compare runs"))]
struct Summary {
    /// The counters' values after spawning, before the commands.
    initial: Vec<u64>,
    /// Events stored for the counters before the run.
    events_before: u64,
    /// Events stored for the counters after the run.
    events_after: u64,
    /// The counters' values after respawning.
    recovered: Vec<u64>,
}

/// What one counter's commands came to.
struct Outcome {
    last_value: u64,
    underflows: u64,
    overflows: u64,
}

/// Sends `commands` commands to `counter`, one after another: mostly
/// increases (by 1 to 5, depending on the counter), and every tenth a
/// decrease by 30 that underflows while the counter is young.
async fn drive(
    counter: &EntityRef<Counter>,
    index: u64,
    commands: u64,
    done: &AtomicU64,
) -> Result<Outcome, Box<dyn Error>> {
    let mut outcome = Outcome {
        last_value: counter.handle_command(Get).await?.unwrap_or_default(),
        underflows: 0,
        overflows: 0,
    };
    for n in 0..commands {
        let reply = if n % 10 == 9 {
            counter.handle_command(Decrease(30)).await?
        } else {
            counter
                .handle_command(Increase((n + index) % 5 + 1))
                .await?
        };
        match reply {
            Ok(value) => outcome.last_value = value,
            Err(CounterError::Underflow) => outcome.underflows += 1,
            Err(CounterError::Overflow) => outcome.overflows += 1,
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(outcome)
}

async fn spawn_all<L: EventLog, S: SnapshotStore>(
    ids: &[String],
    log: &L,
    snapshots: &S,
    snapshot_every: u64,
) -> Result<Vec<EntityRef<Counter>>, Box<dyn Error>> {
    let counters = try_join_all(ids.iter().map(|id| {
        Counter::default()
            .entity()
            .snapshot_every(snapshot_every)
            .spawn(id.clone(), log.clone(), snapshots.clone(), SerdeJson)
    }))
    .await?;
    Ok(counters)
}

async fn values(counters: &[EntityRef<Counter>]) -> Result<Vec<u64>, Box<dyn Error>> {
    let replies = try_join_all(counters.iter().map(|c| c.handle_command(Get))).await?;
    Ok(replies.into_iter().map(|r| r.unwrap_or_default()).collect())
}

/// The events stored for these counters.
async fn events_on_disk<L: EventLog>(log: &L, ids: &[String]) -> Result<u64, Box<dyn Error>> {
    let last = try_join_all(ids.iter().map(|id| log.last_seq_no(Counter::TYPE_NAME, id))).await?;
    Ok(last.iter().map(|seq_no| seq_no.get()).sum())
}

/// Prints progress every second while the load runs (nothing on short runs).
async fn report_progress(done: Arc<AtomicU64>, total: u64) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let done = done.load(Ordering::Relaxed);
        println!(
            "  {done}/{total} commands ({:.0}%, {:.0} commands/s)",
            percent(done, total),
            per_second(done, started.elapsed())
        );
    }
}

fn print_summary(rows: &[(&str, String)]) {
    let left = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let right = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let rule = format!("+-{}-+-{}-+", "-".repeat(left), "-".repeat(right));
    println!("\n{rule}");
    for (key, value) in rows {
        println!("| {key:<left$} | {value:<right$} |");
    }
    println!("{rule}");
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn percent(done: u64, total: u64) -> f64 {
    done as f64 * 100.0 / total.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(backend: Backend, db: PathBuf) -> Args {
        Args {
            backend,
            db,
            durability: DurabilityArg::Full,
            counters: 5,
            commands: 23,
            snapshot_every: 7,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_sqlite_run_continues_from_the_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = args(Backend::Sqlite, dir.path().join("counter.db"));
        let first = sqlite(&args).await.expect("first run");
        assert_eq!(first.events_before, 0);
        assert!(first.events_after > 0);
        let second = sqlite(&args).await.expect("second run");
        assert_eq!(second.events_before, first.events_after);
        assert!(second.events_after > second.events_before);
        assert_eq!(
            second.initial, first.recovered,
            "the second run starts where the first ended"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_memory_backend_starts_fresh() {
        let args = args(Backend::Memory, PathBuf::from("unused.db"));
        let summary = memory(&args).await.expect("memory run");
        assert_eq!(summary.events_before, 0);
        assert_eq!(summary.recovered.len(), 5);
        assert!(!PathBuf::from("unused.db").exists());
    }
}
