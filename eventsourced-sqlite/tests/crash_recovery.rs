//! Crash test: a child process (this test binary, re-executed) runs entities
//! under concurrent load and records every acknowledged reply in a side file;
//! the parent kills it with SIGKILL at random moments, many times, restarting
//! it on the same database. After every kill: every acknowledged event is in
//! the log with the acknowledged content, every entity's seq_nos are gapless,
//! and a respawned entity's state equals a replay of its log.
//!
//! A test without the libtest harness: `main` is the parent, or the child
//! when `CRASH_CHILD_DB` is set.

mod support;

use eventsourced::{EventLog, EventSourcedExt, SeqNo, SerdeJson};
use eventsourced_sqlite::SqliteEventLog;
use futures::TryStreamExt;
use rand::Rng;
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};
use support::{Add, Get, Tally, decode};

const CHILD_DB: &str = "CRASH_CHILD_DB";
const CHILD_ACKS: &str = "CRASH_CHILD_ACKS";
const KILLS: usize = 24;
const ENTITIES: usize = 12;
const SENDERS_PER_ENTITY: usize = 4;
/// The whole test must end well within this.
const DEADLINE: Duration = Duration::from_secs(90);

fn main() {
    if let (Ok(db), Ok(acks)) = (std::env::var(CHILD_DB), std::env::var(CHILD_ACKS)) {
        child(Path::new(&db), Path::new(&acks));
        return;
    }
    parent();
    println!("crash_recovery: ok");
}

/// Runs counters until killed; every acknowledged reply becomes a line
/// `id count sum` in the side file (written after the reply arrived).
fn child(db: &Path, acks: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child runtime");
    let (record, recorded) = mpsc::channel::<String>();
    let acks = acks.to_owned();
    std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&acks)
            .expect("open the side file");
        while let Ok(line) = recorded.recv() {
            let mut lines = line;
            while let Ok(more) = recorded.try_recv() {
                lines.push_str(&more);
            }
            file.write_all(lines.as_bytes())
                .expect("write the side file");
            file.sync_data().expect("fsync the side file");
        }
    });
    runtime.block_on(async move {
        let log = SqliteEventLog::open(db).expect("child opens the database");
        let snapshots = log.snapshot_store();
        let mut entities = Vec::new();
        for n in 0..ENTITIES {
            let entity = Tally::default()
                .entity()
                .snapshot_every(5)
                .spawn(format!("e{n}"), log.clone(), snapshots.clone(), SerdeJson)
                .await
                .expect("child recovers the entity");
            entities.push(entity);
        }
        println!("ready");
        std::io::stdout().flush().expect("flush stdout");
        let mut senders = Vec::new();
        for entity in &entities {
            for _ in 0..SENDERS_PER_ENTITY {
                let (entity, record) = (entity.clone(), record.clone());
                senders.push(tokio::spawn(async move {
                    loop {
                        let amount = rand::rng().random_range(1..10);
                        let tally = entity
                            .handle_command(Add(amount))
                            .await
                            .expect("append succeeds")
                            .expect("Add is never rejected");
                        let line = format!("{} {} {}\n", entity.id(), tally.count, tally.sum);
                        if record.send(line).is_err() {
                            return;
                        }
                    }
                }));
            }
        }
        for sender in senders {
            sender.await.expect("sender task");
        }
    });
}

fn parent() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    let acks = dir.path().join("acks.txt");
    let exe = std::env::current_exe().expect("current_exe");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("parent runtime");
    let mut rng = rand::rng();
    let mut previous_events = 0;
    let mut total_checked = 0;
    for round in 1..=KILLS {
        assert!(
            started.elapsed() < DEADLINE,
            "the crash test must end within {DEADLINE:?}; round {round} starts after {:?}",
            started.elapsed()
        );
        let mut child = Command::new(&exe)
            .env(CHILD_DB, &db)
            .env(CHILD_ACKS, &acks)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("child stdout");
        let (ready, is_ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = ready.send(line);
        });
        // Every fourth round kills during startup (open and recovery),
        // the others under load.
        let during_startup = round % 4 == 0;
        if during_startup {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        } else {
            let line = is_ready
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("round {round}: the child must start within 30 s"));
            assert_eq!(
                line.trim(),
                "ready",
                "round {round}: the child must get ready"
            );
            std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
        }
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert!(
            !status.success(),
            "round {round}: the child must have been killed, not exit ({status})"
        );
        drop_torn_line(&acks);

        let events = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), verify(&db, &acks, round)).await
        });
        let (events, checked) =
            events.unwrap_or_else(|_| panic!("round {round}: verification hung"));
        assert!(
            events >= previous_events,
            "round {round}: the log shrank from {previous_events} to {events} events"
        );
        if !during_startup {
            println!(
                "round {round}: killed under load; {events} events, {checked} acknowledged replies verified"
            );
        }
        previous_events = events;
        total_checked = checked;
    }
    assert!(
        previous_events > 0 && total_checked > 0,
        "the children must have acknowledged events ({total_checked} replies recorded)"
    );
    println!("{KILLS} kills in {:?}", started.elapsed());
}

/// Checks the database against the side file; returns the number of events
/// and of acknowledged replies checked.
async fn verify(db: &Path, acks: &Path, round: usize) -> (u64, usize) {
    let acked = read_acks(acks);
    let log = SqliteEventLog::open(db)
        .unwrap_or_else(|e| panic!("round {round}: the database must open after SIGKILL: {e}"));
    let mut total = 0;
    let checked = acked.values().map(Vec::len).sum();
    for n in 0..ENTITIES {
        let id = format!("e{n}");
        let events: Vec<(SeqNo, bytes::Bytes)> = log
            .events_by_id("tally", &id, SeqNo::new(1))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("round {round}: reading {id} must succeed: {e}"));
        // prefix[k] = the entity's state after its first k events.
        let mut prefix = vec![Tally::default()];
        for (expected, (seq_no, bytes)) in (1..).zip(&events) {
            assert_eq!(
                seq_no.get(),
                expected,
                "round {round}: the seq_nos of {id} must be gapless"
            );
            let state = *prefix.last().expect("not empty");
            prefix.push(eventsourced::EventSourced::handle_event(
                state,
                decode(bytes),
            ));
        }
        let stored = u64::try_from(events.len()).expect("fits");
        assert_eq!(
            log.last_seq_no("tally", &id).await.expect("last_seq_no"),
            SeqNo::new(stored),
            "round {round}: last_seq_no of {id}"
        );
        for &(count, sum) in acked.get(&id).into_iter().flatten() {
            let index = usize::try_from(count).expect("fits");
            let state = prefix.get(index).unwrap_or_else(|| {
                panic!(
                    "round {round}: acknowledged event {count} of {id} is lost (the log has {stored})"
                )
            });
            assert_eq!(
                state.sum, sum,
                "round {round}: acknowledged event {count} of {id} must hold the acknowledged content"
            );
        }
        let entity = Tally::default()
            .entity()
            .snapshot_every(5)
            .spawn(id.clone(), log.clone(), log.snapshot_store(), SerdeJson)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {id} must respawn: {e}"));
        let respawned = entity
            .handle_command(Get)
            .await
            .expect("Get is answered")
            .expect("Get is never rejected");
        assert_eq!(
            respawned,
            *prefix.last().expect("not empty"),
            "round {round}: the respawned state of {id} must equal a replay of its log"
        );
        total += stored;
    }
    (total, checked)
}

/// Cuts a line that the killed child left half written off the end of the
/// side file, so that the next child's lines start on a line of their own.
fn drop_torn_line(path: &Path) {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("read the side file: {e}"),
    };
    let complete = text
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1);
    if complete < text.len() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open the side file");
        file.set_len(u64::try_from(complete).expect("fits"))
            .expect("cut the torn line");
    }
}

/// `id → [(count, sum)]` from the side file; a torn last line is ignored.
fn read_acks(path: &Path) -> HashMap<String, Vec<(u64, u64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("read the side file: {e}"),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let mut acks: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for line in complete.lines() {
        let mut fields = line.split(' ');
        let (Some(id), Some(count), Some(sum)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("malformed side file line {line:?}");
        };
        acks.entry(id.to_owned())
            .or_default()
            .push((count.parse().expect("count"), sum.parse().expect("sum")));
    }
    acks
}
