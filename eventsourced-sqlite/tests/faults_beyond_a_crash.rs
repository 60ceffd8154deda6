//! Faults of the file system and of other users of the file, beyond a crash:
//! a write lock held longer than the busy timeout, a file that becomes
//! read-only (immutable), a full disk, a write-ahead log deleted under a
//! running log, and odd ids and type names on every API.
//!
//! In every case: a readable, typed error naming what and where, within a
//! bounded time; the entity stops with that cause; nothing acknowledged is
//! lost.
//!
//! Some tests need root (`chattr +i`, `mount -t tmpfs`); without it they say
//! so on stderr and return.

use bytes::Bytes;
use eventsourced::testkit::{
    counter::{Counter, Get, Increase},
    writers::{Journal, check_stored, run_test_in_child, write_rounds},
};
use eventsourced::{
    EntityRef, EventLog, EventLogError, EventSourcedExt, Position, SeqNo, SerdeJson, SnapshotStore,
    SpawnError,
};
use eventsourced_sqlite::{SqliteConfig, SqliteEventLog};
use futures::{StreamExt, TryStreamExt};
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};
use tokio::time::timeout;

/// Every single operation here must end well within this.
const LIMIT: Duration = Duration::from_secs(10);

fn config(busy_timeout: Duration) -> SqliteConfig {
    let mut config = SqliteConfig::default();
    config.busy_timeout = busy_timeout;
    config
}

async fn spawn(log: &SqliteEventLog, id: &str) -> Result<EntityRef<Counter>, SpawnError> {
    Counter::default()
        .entity()
        .snapshot_every(3)
        .spawn(id.to_owned(), log.clone(), log.snapshot_store(), SerdeJson)
        .await
}

async fn stored(log: &SqliteEventLog, id: &str) -> Vec<(SeqNo, Bytes)> {
    timeout(
        LIMIT,
        log.events_by_id("counter", id, SeqNo::new(1)).try_collect(),
    )
    .await
    .expect("a read hung")
    .expect("read the stored events")
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Runs `program args`; `false` if it cannot run or fails.
fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

/// Sends `n` commands at once to one entity; each must be answered within
/// [`LIMIT`] with a technical error. Returns the errors' texts.
async fn all_fail(entity: &EntityRef<Counter>, n: u64, what: &str) -> Vec<String> {
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let entity = entity.clone();
            tokio::spawn(
                async move { timeout(LIMIT, entity.handle_command(Increase(1000 + i))).await },
            )
        })
        .collect();
    let mut causes = Vec::new();
    for send in sends {
        let answer = send.await.expect("a send task panicked");
        let answer = answer.unwrap_or_else(|_| panic!("a command hung while {what}"));
        match answer {
            Ok(reply) => panic!("a command was acknowledged ({reply:?}) while {what}"),
            Err(error) => {
                assert!(
                    error.append_error().is_some(),
                    "not an append failure: {error}"
                );
                causes.push(error.to_string());
            }
        }
    }
    causes
}

/// The entity stopped, and any clone's later send returns `cause`.
async fn assert_stopped_with(entity: &EntityRef<Counter>, cause: &str) {
    let stopped = entity.stopped().expect("the entity keeps running");
    assert_eq!(stopped.to_string(), cause);
    let later = timeout(LIMIT, entity.clone().handle_command(Get))
        .await
        .expect("a send to a stopped entity hung")
        .expect_err("a stopped entity answered");
    assert_eq!(later.to_string(), cause, "a later send names another cause");
}

// ---------------------------------------------------------------------------
// 1. Another connection holds the write lock.

/// The error of a log or snapshot store operation that must fail within
/// `LIMIT`.
async fn fails_in_time<T: std::fmt::Debug, E>(
    operation: impl std::future::Future<Output = Result<T, E>>,
) -> E {
    timeout(LIMIT, operation)
        .await
        .expect("the operation hung")
        .expect_err("the operation must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_lock_held_past_the_busy_timeout_fails_appends_readably_and_stops_the_entity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let log = SqliteEventLog::open_with(&path, config(Duration::from_millis(300))).unwrap();
    let entity = spawn(&log, "a").await.unwrap();
    for n in 1..=5 {
        assert_eq!(
            entity.handle_command(Increase(n)).await.unwrap(),
            Ok(n * (n + 1) / 2)
        );
    }
    let snapshots = log.snapshot_store();
    let before = snapshots.load("counter", "a").await.unwrap();

    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    let causes = all_fail(&entity, 4, "another connection holds the write lock").await;
    let took = started.elapsed();
    eprintln!("locked: {took:?}: {}", causes[0]);
    assert!(took < Duration::from_secs(5), "failing took {took:?}");
    for cause in &causes {
        assert!(
            cause.contains("locked") && cause.contains("locked.db"),
            "{cause}"
        );
    }
    assert_stopped_with(&entity, &causes[0]).await;

    // The log's own operations fail the same way, and reads go on.
    let error = fails_in_time(log.append("counter", "b", SeqNo::ZERO, &[Bytes::from("1")])).await;
    assert!(matches!(error, EventLogError::Backend { .. }), "{error:?}");
    assert!(error.to_string().contains("locked"), "{error}");
    let error = fails_in_time(snapshots.save("counter", "a", SeqNo::new(9), "9".into())).await;
    assert!(error.to_string().contains("locked"), "{error}");
    assert_eq!(
        log.last_seq_no("counter", "a").await.unwrap(),
        SeqNo::new(5)
    );
    assert_eq!(snapshots.load("counter", "a").await.unwrap(), before);

    // Released: the same log writes again, and a respawn sees exactly the
    // acknowledged events.
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    assert_eq!(
        log.last_seq_no("counter", "a").await.unwrap(),
        SeqNo::new(5)
    );
    let entity = spawn(&log, "a").await.unwrap();
    assert_eq!(entity.handle_command(Get).await.unwrap(), Ok(15));
    assert_eq!(entity.handle_command(Increase(1)).await.unwrap(), Ok(16));
    assert_eq!(log.last_seq_no("counter", "b").await.unwrap(), SeqNo::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_lock_held_shorter_than_the_busy_timeout_only_delays_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("briefly.db");
    let log = SqliteEventLog::open_with(&path, config(Duration::from_secs(5))).unwrap();
    let entity = spawn(&log, "a").await.unwrap();
    assert_eq!(entity.handle_command(Increase(1)).await.unwrap(), Ok(1));
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        blocker.execute_batch("COMMIT").unwrap();
    });
    let started = Instant::now();
    let replies: Vec<_> = (0..4)
        .map(|_| {
            let entity = entity.clone();
            tokio::spawn(async move { timeout(LIMIT, entity.handle_command(Increase(1))).await })
        })
        .collect();
    for reply in replies {
        let reply = reply.await.unwrap().expect("a command hung");
        assert!(matches!(reply, Ok(Ok(_))), "{reply:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    release.join().unwrap();
    assert_eq!(entity.handle_command(Get).await.unwrap(), Ok(5));
    assert_eq!(
        log.last_seq_no("counter", "a").await.unwrap(),
        SeqNo::new(5)
    );
}

// ---------------------------------------------------------------------------
// 2. The file becomes read-only while the log is open.

/// Makes files immutable (`chattr +i`: even root cannot write them, through
/// descriptors already open too) and undoes it on drop.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: Vec<PathBuf>) -> Option<Immutable> {
        let mut set = Immutable(Vec::new());
        for path in paths {
            if !run("chattr", &["+i", path.to_str()?]) {
                return None;
            }
            set.0.push(path);
        }
        Some(set)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = Command::new("chattr")
                .args(["-i", &path.to_string_lossy()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_made_read_only_under_a_running_log_fails_writes_readably_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frozen.db");
    let log = SqliteEventLog::open(&path).unwrap();
    let snapshots = log.snapshot_store();
    let entity = spawn(&log, "a").await.unwrap();
    for _ in 0..4 {
        entity.handle_command(Increase(2)).await.unwrap().unwrap();
    }
    let files = vec![
        path.clone(),
        companion(&path, "-wal"),
        dir.path().to_owned(),
    ];
    let Some(frozen) = Immutable::set(files) else {
        eprintln!("SKIPPED: chattr +i is not available here (needs root on ext4)");
        return;
    };
    let causes = all_fail(&entity, 3, "the file is immutable").await;
    eprintln!("read-only: {}", causes[0]);
    for cause in &causes {
        assert!(
            cause.contains("frozen.db"),
            "the cause names no file: {cause}"
        );
    }
    assert_stopped_with(&entity, &causes[0]).await;
    let error = fails_in_time(snapshots.save("counter", "a", SeqNo::new(4), "8".into())).await;
    assert!(error.to_string().contains("frozen.db"), "{error}");
    // Reads still answer, with the acknowledged events only.
    assert_eq!(stored(&log, "a").await.len(), 4);

    drop(frozen);
    let entity = spawn(&log, "a").await.unwrap();
    assert_eq!(entity.handle_command(Get).await.unwrap(), Ok(8));
    assert_eq!(entity.handle_command(Increase(1)).await.unwrap(), Ok(9));
    drop((entity, snapshots, log));
    let log = SqliteEventLog::open(&path).unwrap();
    assert_eq!(
        log.last_seq_no("counter", "a").await.unwrap(),
        SeqNo::new(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_read_only_file_is_a_typed_error_or_a_log_whose_writes_fail_readably() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.db");
    {
        let log = SqliteEventLog::open(&path).unwrap();
        log.append("counter", "a", SeqNo::ZERO, &[Bytes::from("1")])
            .await
            .unwrap();
    }
    assert!(
        !companion(&path, "-wal").exists(),
        "closing checkpoints the log"
    );
    let Some(_frozen) = Immutable::set(vec![path.clone(), dir.path().to_owned()]) else {
        eprintln!("SKIPPED: chattr +i is not available here (needs root on ext4)");
        return;
    };
    let opened = std::thread::spawn({
        let path = path.clone();
        move || SqliteEventLog::open(&path)
    });
    let started = Instant::now();
    while !opened.is_finished() {
        assert!(started.elapsed() < LIMIT, "opening a read-only file hung");
        std::thread::sleep(Duration::from_millis(10));
    }
    match opened.join().expect("opening panicked") {
        Err(error) => {
            eprintln!("open read-only: {error}");
            assert!(error.to_string().contains("sealed.db"), "{error}");
        }
        Ok(log) => {
            let error =
                fails_in_time(log.append("counter", "a", SeqNo::new(1), &[Bytes::from("2")])).await;
            eprintln!("append read-only: {error}");
            assert!(error.to_string().contains("sealed.db"), "{error}");
            assert_eq!(
                log.last_seq_no("counter", "a").await.unwrap(),
                SeqNo::new(1)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 3. The disk is full.

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).ok()?;
        let options = format!("size={size}");
        run(
            "mount",
            &["-t", "tmpfs", "-o", &options, "tmpfs", at.to_str()?],
        )
        .then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a file of its own; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    let chunk = vec![0xa5u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.write_all(&[0]);
    let _ = file.sync_all();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_fails_appends_readably_stops_the_entity_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&dir.path().join("small"), "8m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let path = tmpfs.0.join("full.db");
    let log = SqliteEventLog::open(&path).unwrap();
    let journal = Journal::new();
    let mut rounds = 0;
    write_rounds(
        &journal,
        1,
        4,
        || {
            rounds += 1;
            rounds <= 20
        },
        || spawn(&log, "a"),
    )
    .await;
    assert_eq!(journal.acknowledged().len(), 80);
    let filler = fill(&tmpfs.0);

    // Write until the disk is full, and then some.
    let entity = spawn(&log, "a").await.unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    let cause = loop {
        n += 1;
        assert!(n < 100_000, "100 000 appends on a full disk all succeeded");
        match timeout(LIMIT, entity.handle_command(Increase(1))).await {
            Err(_) => panic!("an append hung on a full disk"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => break error.to_string(),
        }
    };
    eprintln!(
        "full after {n} more appends, {:?}: {cause}",
        started.elapsed()
    );
    assert!(
        cause.contains("full") && cause.contains("full.db"),
        "{cause}"
    );
    assert_stopped_with(&entity, &cause).await;
    let acknowledged_here = n - 1;

    // A snapshot save that finds no space fails readably and breaks nothing.
    let snapshots = log.snapshot_store();
    let kept = snapshots.load("counter", "a").await.unwrap();
    let big = Bytes::from(vec![b'7'; 2 << 20]);
    let error = fails_in_time(snapshots.save("counter", "a", SeqNo::new(1_000_000), big)).await;
    eprintln!("snapshot on a full disk: {error}");
    assert!(error.to_string().contains("full"), "{error}");
    assert_eq!(snapshots.load("counter", "a").await.unwrap(), kept);

    // Space again: the same log writes on; a respawn sees the acknowledged.
    fs::remove_file(&filler).unwrap();
    let all = stored(&log, "a").await;
    let state = check_stored(&journal, &all[..80]);
    assert_eq!(
        all.len() as u64,
        80 + acknowledged_here,
        "stored ≠ acknowledged"
    );
    let entity = spawn(&log, "a").await.unwrap();
    assert_eq!(
        entity.handle_command(Get).await.unwrap(),
        Ok(state.0 + acknowledged_here)
    );
    entity.handle_command(Increase(1)).await.unwrap().unwrap();
    drop((entity, snapshots, log));
    let log = SqliteEventLog::open(&path).unwrap();
    assert_eq!(
        log.last_seq_no("counter", "a").await.unwrap(),
        SeqNo::new(81 + acknowledged_here)
    );
    drop(log);
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_during_racing_writers_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&dir.path().join("small"), "4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let path = tmpfs.0.join("race.db");
    let log = SqliteEventLog::open(&path).unwrap();
    let (a, b) = (Journal::new(), Journal::new());
    let mut filler = None;
    let until = Instant::now() + Duration::from_secs(2);
    let filled_at = Instant::now() + Duration::from_millis(300);
    let freed_at = Instant::now() + Duration::from_millis(1300);
    let mut pace = || {
        let now = Instant::now();
        if now >= filled_at && now < freed_at && filler.is_none() {
            filler = Some(fill(&tmpfs.0));
        }
        if now >= freed_at
            && let Some(file) = filler.take()
        {
            fs::remove_file(file).unwrap();
        }
        now < until
    };
    let mut other = || Instant::now() < until;
    futures::join!(
        write_rounds(&a, 1, 4, &mut pace, || spawn(&log, "shared")),
        write_rounds(&b, 2, 4, &mut other, || spawn(&log, "shared")),
    );
    if let Some(file) = filler.take() {
        fs::remove_file(file).unwrap();
    }
    a.merge(&b);
    eprintln!("{}", a.summary());
    assert!(!a.failed().is_empty(), "the full disk failed nothing");
    let all = stored(&log, "shared").await;
    let expected = check_stored(&a, &all);
    let entity = spawn(&log, "shared").await.unwrap();
    assert_eq!(entity.handle_command(Get).await.unwrap(), Ok(expected.0));
    drop((entity, log));
    drop(tmpfs);
}

// ---------------------------------------------------------------------------
// 4. The write-ahead log deleted under a running log.

const WAL_CHILD_DB: &str = "ZZ_FAULTS_WAL_CHILD_DB";
const WAL_CHILD_JOURNAL: &str = "ZZ_FAULTS_WAL_CHILD_JOURNAL";

/// The child: appends, has its -wal and -shm deleted, appends on, journals
/// what it was told and dies without closing the file (as a crash would).
/// Its log notices that the files it opened are gone: appends after the
/// deletion are refused (and respawns fail, as recovery reads refuse too),
/// none is acknowledged.
#[test]
fn child_deletes_its_wal_then_crashes() {
    let (Ok(db), Ok(journal)) = (
        std::env::var(WAL_CHILD_DB),
        std::env::var(WAL_CHILD_JOURNAL),
    ) else {
        return;
    };
    let journal = Journal::to_file(journal).expect("create the child's journal");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let db = PathBuf::from(db);
        let log = SqliteEventLog::open(&db).expect("open");
        five_rounds(&journal, &log, 1).await;
        for suffix in ["-wal", "-shm"] {
            fs::remove_file(companion(&db, suffix)).expect("remove the wal");
        }
        five_rounds(&journal, &log, 2).await;
    });
    std::process::abort();
}

/// Five rounds of two commands to entity `a`, as writer `tag`.
async fn five_rounds(journal: &Journal, log: &SqliteEventLog, tag: u64) {
    let mut rounds = 0;
    let keep_going = || {
        rounds += 1;
        rounds <= 5
    };
    write_rounds(journal, tag, 2, keep_going, || spawn(log, "a")).await;
}

/// Nothing acknowledged after the -wal file was deleted is lost in a crash:
/// the log checks, before and after each commit, that its write-ahead log
/// is still the file at `<path>-wal`, and refuses appends once it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_after_the_wal_is_deleted_are_refused_or_survive_a_crash() {
    if std::env::var(WAL_CHILD_DB).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("walless.db");
    let journal_path = dir.path().join("child.journal");
    drop(SqliteEventLog::open(&db).unwrap());
    let mut child = run_test_in_child(
        "child_deletes_its_wal_then_crashes",
        &[
            (WAL_CHILD_DB, db.to_str().unwrap()),
            (WAL_CHILD_JOURNAL, journal_path.to_str().unwrap()),
        ],
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the child did not crash: {status}");
    let journal = Journal::read(&journal_path).unwrap();
    eprintln!("child: {}", journal.summary());
    // Events acknowledged before the deletion were in the deleted file: the
    // deleter destroyed them, no log can keep them. Those acknowledged after
    // it must be in the file, or must have been refused.
    let after: Vec<u64> = journal
        .acknowledged()
        .into_iter()
        .filter(|value| *value > 2_000_000)
        .collect();
    let log = SqliteEventLog::open(&db).unwrap();
    let values: Vec<u64> = stored(&log, "a")
        .await
        .iter()
        .map(|(_, bytes)| {
            let text = std::str::from_utf8(bytes).unwrap();
            text.trim_start_matches("{\"Increased\":")
                .trim_end_matches('}')
                .parse()
                .unwrap()
        })
        .collect();
    let lost: Vec<u64> = after
        .iter()
        .copied()
        .filter(|v| !values.contains(v))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged after the -wal file was deleted, lost in a crash: {lost:?} (stored {values:?})"
    );
}

// ---------------------------------------------------------------------------
// 5. Odd ids and type names on every API.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_round_trip_on_every_api_and_stay_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(dir.path().join("ids.db")).unwrap();
    let snapshots = log.snapshot_store();
    let long = "x".repeat(1 << 20);
    let odd: Vec<(String, String)> = vec![
        ("t".into(), "a".into()),
        ("t".into(), "a\0".into()),
        ("t".into(), "a\0b".into()),
        ("t".into(), "a\0c".into()),
        ("t".into(), "\0".into()),
        ("t".into(), long.clone()),
        ("t".into(), format!("{long}y")),
        ("t".into(), "'; DROP TABLE events; --".into()),
        ("t".into(), "%_*>. \u{1F600}\u{202E}\r\n\t".into()),
        ("t\0".into(), "a".into()),
        ("t\0x".into(), "a".into()),
        (long.clone(), "a".into()),
    ];
    for (n, (type_name, id)) in odd.iter().enumerate() {
        let event = Bytes::from(format!("event {n}"));
        let last = timeout(
            LIMIT,
            log.append(type_name, id, SeqNo::ZERO, std::slice::from_ref(&event)),
        )
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("append {n}: {e}"));
        assert_eq!(last, SeqNo::new(1), "entity {n}");
        let state = Bytes::from(format!("state {n}"));
        snapshots
            .save(type_name, id, SeqNo::new(1), state)
            .await
            .unwrap_or_else(|e| panic!("save {n}: {e}"));
    }
    for (n, (type_name, id)) in odd.iter().enumerate() {
        assert_eq!(
            log.last_seq_no(type_name, id).await.unwrap(),
            SeqNo::new(1),
            "entity {n}"
        );
        let events: Vec<_> = log
            .events_by_id(type_name, id, SeqNo::new(1))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            events,
            vec![(SeqNo::new(1), Bytes::from(format!("event {n}")))],
            "entity {n}"
        );
        assert_eq!(
            snapshots.load(type_name, id).await.unwrap(),
            Some((SeqNo::new(1), Bytes::from(format!("state {n}")))),
            "snapshot {n}"
        );
    }
    // By type: each type sees its own ids, exactly.
    for type_name in ["t", "t\0", "t\0x", long.as_str()] {
        let expected: Vec<&str> = odd
            .iter()
            .filter(|(t, _)| t == type_name)
            .map(|(_, id)| id.as_str())
            .collect();
        let envelopes: Vec<_> = timeout(
            LIMIT,
            log.events_by_type(type_name, Position::new(0))
                .take(expected.len())
                .try_collect::<Vec<_>>(),
        )
        .await
        .expect("events_by_type hung")
        .unwrap();
        let ids: Vec<&str> = envelopes.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            expected,
            "type {:?}",
            &type_name[..type_name.len().min(8)]
        );
    }
    // The entity runtime round-trips them too.
    for id in ["a\0b", long.as_str()] {
        let entity = spawn(&log, id).await.unwrap();
        entity.handle_command(Increase(3)).await.unwrap().unwrap();
        drop(entity);
        let entity = spawn(&log, id).await.unwrap();
        assert_eq!(entity.handle_command(Get).await.unwrap(), Ok(3));
    }
    assert_eq!(log.last_seq_no("counter", "a").await.unwrap(), SeqNo::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_ids_and_type_names_are_refused_before_writing_and_read_as_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(dir.path().join("empty.db")).unwrap();
    let snapshots = log.snapshot_store();
    for (type_name, id) in [("", "a"), ("t", ""), ("", "")] {
        let error = log
            .append(type_name, id, SeqNo::ZERO, &[Bytes::from("e")])
            .await
            .unwrap_err();
        assert!(
            matches!(error, EventLogError::InvalidId { .. }),
            "{error:?}"
        );
        let error = snapshots
            .save(type_name, id, SeqNo::new(1), "s".into())
            .await
            .unwrap_err();
        assert!(
            matches!(error, eventsourced::SnapshotStoreError::InvalidId { .. }),
            "{error:?}"
        );
        // Reads of an id nothing can be stored under find nothing, or refuse.
        match log.last_seq_no(type_name, id).await {
            Ok(seq_no) => assert_eq!(seq_no, SeqNo::ZERO),
            Err(error) => assert!(matches!(error, EventLogError::InvalidId { .. })),
        }
        let events: Vec<_> = log
            .events_by_id(type_name, id, SeqNo::new(1))
            .collect()
            .await;
        assert!(
            events
                .iter()
                .all(|e| matches!(e, Err(EventLogError::InvalidId { .. }))),
            "{events:?}"
        );
        match snapshots.load(type_name, id).await {
            Ok(loaded) => assert_eq!(loaded, None),
            Err(error) => assert!(
                matches!(error, eventsourced::SnapshotStoreError::InvalidId { .. }),
                "{error:?}"
            ),
        }
    }
    // An empty id of the runtime is refused at spawn, with a typed error.
    let spawned = timeout(LIMIT, spawn(&log, "")).await.expect("a spawn hung");
    assert!(spawned.is_err(), "an entity with an empty id was spawned");
    assert_eq!(log.event_count().await.unwrap(), 0);
}

/// SQLite goes on committing to a deleted -wal file, which no other
/// connection sees: the log refuses appends once `<path>-wal` (or `-shm`) is
/// not the file it opened, with an error naming it, and reads fail the same
/// way rather than answer from the deleted file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_after_the_wal_is_deleted_are_refused_or_seen_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("walless.db");
    let log = SqliteEventLog::open(&db).unwrap();
    let mut acknowledged = 0;
    for n in 0..5 {
        log.append("t", "a", SeqNo::new(n), &[Bytes::from(format!("{n}"))])
            .await
            .unwrap();
        acknowledged += 1;
    }
    for suffix in ["-wal", "-shm"] {
        fs::remove_file(companion(&db, suffix)).unwrap();
    }
    let mut refused = None;
    for n in 5..10 {
        match timeout(
            LIMIT,
            log.append("t", "a", SeqNo::new(n), &[Bytes::from(format!("{n}"))]),
        )
        .await
        .expect("an append hung")
        {
            Ok(_) => acknowledged += 1,
            Err(error) => {
                refused = Some(error.to_string());
                break;
            }
        }
    }
    eprintln!("wal deleted: acknowledged {acknowledged}, refused: {refused:?}");
    if let Some(refused) = &refused {
        assert!(refused.contains("walless.db"), "{refused}");
    }
    // A read answers what was acknowledged, or fails; it never answers less.
    match timeout(LIMIT, log.last_seq_no("t", "a"))
        .await
        .expect("a read hung")
    {
        Ok(last) => assert_eq!(
            last,
            SeqNo::new(acknowledged),
            "a read misses acknowledged events"
        ),
        Err(error) => eprintln!("read after the wal was deleted: {error}"),
    }
    // Another connection to the file (as another process would open it).
    let other = rusqlite::Connection::open(&db).unwrap();
    let seen: Option<i64> = other
        .query_row(
            "SELECT max(seq_no) FROM events WHERE type_name = 't'",
            [],
            |row| row.get(0),
        )
        .unwrap_or(None);
    eprintln!("another connection sees last seq_no {seen:?}, {acknowledged} acknowledged");
    drop(other);
    // Acknowledged means durable for every reader of the file: events the
    // log acknowledged after the deletion must be seen by another process,
    // or the log must have refused them.
    if refused.is_none() {
        assert_eq!(
            seen,
            Some(i64::try_from(acknowledged).unwrap()),
            "another process does not see the events acknowledged after the -wal file was deleted"
        );
    }
    drop(log);
    let log = SqliteEventLog::open(&db).unwrap();
    let last = log.last_seq_no("t", "a").await.unwrap();
    eprintln!("after reopening: {last}");
    assert!(
        last.get() >= acknowledged.min(5) + u64::from(refused.is_none()) * (acknowledged - 5),
        "acknowledged {acknowledged}, stored {last}"
    );
}

/// After a pause, the check runs before a batch is written too: commands sent
/// once the -wal and -shm files are gone all fail with that cause, the entity
/// stops with it, and none of their events is written anywhere (closing the
/// log checkpoints the deleted log's frames into the database file, so the
/// acknowledged events come back, and nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_after_the_wal_is_deleted_are_refused_unwritten_and_stop_the_entity() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unlogged.db");
    let log = SqliteEventLog::open(&db).unwrap();
    let entity = spawn(&log, "a").await.unwrap();
    for _ in 0..4 {
        entity.handle_command(Increase(1)).await.unwrap().unwrap();
    }
    for suffix in ["-wal", "-shm"] {
        fs::remove_file(companion(&db, suffix)).unwrap();
    }
    // Longer than a passed check vouches for the files.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let causes = all_fail(&entity, 3, "the -wal file is deleted").await;
    eprintln!("wal deleted: {}", causes[0]);
    for cause in &causes {
        assert!(
            cause.contains("unlogged.db-wal") && cause.contains("removed"),
            "{cause}"
        );
    }
    assert_stopped_with(&entity, &causes[0]).await;
    let error = fails_in_time(log.append("counter", "b", SeqNo::ZERO, &[Bytes::from("1")])).await;
    assert!(error.to_string().contains("unlogged.db-wal"), "{error}");
    // Opening the path again while the log lives gives the same log.
    let again = SqliteEventLog::open(&db).unwrap();
    assert!(
        again
            .append("counter", "b", SeqNo::ZERO, &[Bytes::from("1")])
            .await
            .is_err()
    );
    drop((entity, again, log));
    let log = SqliteEventLog::open(&db).unwrap();
    assert_eq!(
        log.last_seq_no("counter", "a").await.unwrap(),
        SeqNo::new(4)
    );
    assert_eq!(log.last_seq_no("counter", "b").await.unwrap(), SeqNo::ZERO);
    let entity = spawn(&log, "a").await.unwrap();
    assert_eq!(entity.handle_command(Increase(1)).await.unwrap(), Ok(5));
}

/// Deleting only the index (-shm) is refused too: another process would build
/// an index of its own and overwrite this log's later commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_after_the_wal_index_is_deleted_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unindexed.db");
    let log = SqliteEventLog::open(&db).unwrap();
    log.append("t", "a", SeqNo::ZERO, &[Bytes::from("1")])
        .await
        .unwrap();
    fs::remove_file(companion(&db, "-shm")).unwrap();
    let error = fails_in_time(log.append("t", "a", SeqNo::new(1), &[Bytes::from("2")])).await;
    assert!(
        error.to_string().contains("unindexed.db-shm") && error.to_string().contains("removed"),
        "{error}"
    );
}

#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

/// The check has no false alarms: SQLite keeps the -wal and -shm files of a
/// database it has open (every connection holds a shared lock that keeps
/// others from deleting them), and checkpoints, automatic or
/// `wal_checkpoint(TRUNCATE)` by another connection, rewind or truncate the
/// log in place. Appends go on through all of that.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_the_same_file_through_checkpoints_and_other_connections() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("steady.db");
    let log = SqliteEventLog::open(&db).unwrap();
    let (wal, shm) = (companion(&db, "-wal"), companion(&db, "-shm"));
    let files = (inode(&db), inode(&wal), inode(&shm));
    let event = Bytes::from(vec![b'e'; 3000]);
    let mut seq_no = 0;
    for round in 0..6 {
        // Past the automatic checkpoint (1000 pages) more than once.
        for _ in 0..400 {
            log.append("t", "a", SeqNo::new(seq_no), std::slice::from_ref(&event))
                .await
                .unwrap_or_else(|e| panic!("round {round}, append {seq_no}: {e}"));
            seq_no += 1;
        }
        // Another connection, as another process's would, comes and goes.
        let other = rusqlite::Connection::open(&db).unwrap();
        let seen: i64 = other
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(seen, i64::try_from(seq_no).unwrap());
        if round % 2 == 1 {
            other
                .execute_batch("PRAGMA journal_size_limit = 0; PRAGMA wal_checkpoint(TRUNCATE);")
                .unwrap();
        }
        drop(other);
        assert_eq!(log.last_seq_no("t", "a").await.unwrap(), SeqNo::new(seq_no));
        assert_eq!(
            (inode(&db), inode(&wal), inode(&shm)),
            files,
            "round {round}"
        );
    }
    let entity = spawn(&log, "c").await.unwrap();
    assert_eq!(entity.handle_command(Increase(2)).await.unwrap(), Ok(2));
}
