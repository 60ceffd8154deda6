//! The read side keeps its promises at the edges: the reader pool stays
//! within `read-connections`, a symlinked path is the same database as its
//! target, a replaced file is reported by live streams as by appends, damaged
//! rows are `Corrupt` and read errors name the file and entity; live streams
//! stay complete and ordered over appends of several processes.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, EventLogError, Position, SeqNo};
use eventsourced_sqlite::{SqliteConfig, SqliteEventLog};
use futures::{FutureExt, StreamExt, TryStreamExt};
use rusqlite::Connection;
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

fn event(label: impl std::fmt::Display) -> Bytes {
    Bytes::from(label.to_string())
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// File descriptors of this process open on `path` (the main database file).
fn fds_on(path: &Path) -> usize {
    let target = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| *t == target)
        .count()
}

/// `read-connections` bounds the connections open at once, even when reads
/// are dropped mid-way (a stream dropped, a timeout): a dropped read keeps its
/// permit until its blocking task has given the connection back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reads_stay_within_read_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    let mut config = SqliteConfig::default();
    config.read_connections = 1;
    config.durability = eventsourced_sqlite::Durability::Fast;
    let log = SqliteEventLog::open_with(&path, config).unwrap();
    let payload = Bytes::from(vec![b'x'; 2048]);
    log.append("t", "big", SeqNo::ZERO, &vec![payload; 4096])
        .await
        .unwrap();
    assert_eq!(log.last_seq_no("t", "big").await.unwrap(), SeqNo::new(4096));
    let before = fds_on(&path);
    for _ in 0..64 {
        let mut stream = Box::pin(log.events_by_id("t", "big", SeqNo::new(1)));
        // One poll starts the read on a blocking thread; then the stream is dropped.
        assert!(stream.next().now_or_never().is_none());
        drop(stream);
    }
    // Let the abandoned blocking reads finish and put their connections back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Later reads still work...
    assert_eq!(log.last_seq_no("t", "big").await.unwrap(), SeqNo::new(4096));
    let after = fds_on(&path);
    // ...but with read_connections = 1 at most one read connection may exist.
    assert!(
        after <= before,
        "read-connections = 1, yet the file descriptors on the database went from {before} to {after}: \
         dropped reads opened extra connections that stay pooled"
    );
}

/// Opening a file through a symbolic link is opening that file: one writer
/// per file and process, so followers of one handle wake at once for commits
/// made through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_path_shares_the_writer_and_wakes_followers() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.db");
    let link = dir.path().join("link.db");
    let mut config = SqliteConfig::default();
    config.follow_poll_interval = Duration::from_secs(60);
    let a = SqliteEventLog::open_with(&real, config.clone()).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let b = SqliteEventLog::open_with(&link, config).unwrap();
    let mut follower = Box::pin(a.events_by_type("sym", Position::START));
    // Let the follower catch up (nothing) and wait.
    assert!(
        timeout(Duration::from_millis(300), follower.next())
            .await
            .is_err()
    );
    b.append("sym", "x", SeqNo::ZERO, &[event(1)])
        .await
        .unwrap();
    let woke = timeout(Duration::from_secs(5), follower.next()).await;
    assert!(
        matches!(woke, Ok(Some(Ok(_)))),
        "a commit through {} (a symlink to {}) must wake the follower at once, \
         not after follow-poll-interval (60 s): got {woke:?}; a.path() = {:?}, b.path() = {:?}",
        link.display(),
        real.display(),
        a.path(),
        b.path()
    );
}

/// A second handle on the same file through a symlink or a hard link with
/// another configuration is refused (`OpenWithOtherConfig`), as with any
/// other spelling of the path.
#[test]
fn another_link_to_the_file_with_another_config_is_refused() {
    type MakeLink = fn(&Path, &Path) -> std::io::Result<()>;
    let links: [(&str, MakeLink); 2] = [
        ("symlink", |real, link| {
            std::os::unix::fs::symlink(real, link)
        }),
        ("hard link", |real, link| std::fs::hard_link(real, link)),
    ];
    for (kind, make_link) in links {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.db");
        let link = dir.path().join("link.db");
        let _a = SqliteEventLog::open(&real).unwrap();
        make_link(&real, &link).unwrap();
        let mut other = SqliteConfig::default();
        other.durability = eventsourced_sqlite::Durability::Fast;
        let b = SqliteEventLog::open_with(&link, other);
        assert!(
            matches!(
                b,
                Err(eventsourced_sqlite::SqliteError::OpenWithOtherConfig { .. })
            ),
            "the file is already open with durability full; opening it through a {kind} with \
             durability fast must be refused, got {b:?}"
        );
    }
}

/// After the database file is replaced (removed and created anew at the same
/// path, e.g. a restore), the old handle's writer refuses commits, and its
/// live streams end with an error too: they deliver no event of a refused
/// append (committed to the unlinked file before the writer's check), and no
/// event of the new file, whose positions are not comparable with the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_on_a_replaced_file_delivers_no_refused_event_and_ends_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replaced.db");
    let mut config = SqliteConfig::default();
    config.follow_poll_interval = Duration::from_millis(50);
    config.read_connections = 1;
    let old = SqliteEventLog::open_with(&path, config.clone()).unwrap();
    old.append("t", "x", SeqNo::ZERO, &[event(1), event(2), event(3)])
        .await
        .unwrap();
    let mut follower = Box::pin(old.events_by_type("t", Position::START));
    for n in 1..=3u64 {
        let e = timeout(LIMIT, follower.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.seq_no, SeqNo::new(n));
    }
    for p in [
        path.clone(),
        companion(&path, "-wal"),
        companion(&path, "-shm"),
    ] {
        std::fs::remove_file(p).unwrap();
    }
    // The old handle knows: its appends are refused.
    let refused = old.append("t", "x", SeqNo::new(3), &[event(4)]).await;
    assert!(refused.is_err(), "{refused:?}");
    // A new handle at the path writes the new file.
    let new = SqliteEventLog::open_with(&path, config).unwrap();
    for n in 0..10u64 {
        new.append("t", "y", SeqNo::new(n), &[event(n)])
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline.into(), follower.next()).await {
        let failed = item.is_err();
        seen.push(item.map(|e| (e.position.get(), e.id, e.seq_no.get())));
        if failed {
            break;
        }
    }
    assert!(
        !seen
            .iter()
            .any(|item| matches!(item, Ok((_, id, 4)) if id == "x")),
        "the append of x/4 was refused, yet the old handle's follower delivered its event: {seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(Err(_))),
        "the old handle's live stream must report that its file was replaced \
         (as its appends do); within 3 s it yielded only {seen:?}"
    );
}

/// The same without any append on the old handle: its follower finds out at
/// its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_on_a_replaced_file_reports_it_at_its_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replaced-quietly.db");
    let mut config = SqliteConfig::default();
    config.follow_poll_interval = Duration::from_millis(50);
    let old = SqliteEventLog::open_with(&path, config.clone()).unwrap();
    old.append("t", "x", SeqNo::ZERO, &[event(1)])
        .await
        .unwrap();
    let mut follower = Box::pin(old.events_by_type("t", Position::START));
    timeout(LIMIT, follower.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for p in [
        path.clone(),
        companion(&path, "-wal"),
        companion(&path, "-shm"),
    ] {
        std::fs::remove_file(p).unwrap();
    }
    let new = SqliteEventLog::open_with(&path, config).unwrap();
    for n in 0..10u64 {
        new.append("t", "y", SeqNo::new(n), &[event(n)])
            .await
            .unwrap();
    }
    let next = timeout(Duration::from_secs(3), follower.next()).await;
    assert!(
        matches!(next, Ok(Some(Err(_)))),
        "the old handle's live stream must report that its file was replaced; \
         after 3 s: {next:?}"
    );
}

/// SQLite keeps a symlinked database's write-ahead log next to the target, and
/// that is where the header check looks: a file legitimately shorter than its
/// header says while its WAL holds frames (an interrupted checkpoint) opens
/// through a symlink as through its real path, not as `Truncated`.
#[test]
fn a_symlinked_path_finds_the_wal_of_its_target() {
    let live = tempfile::tempdir().unwrap();
    let real_live = live.path().join("real.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = SqliteEventLog::open(&real_live).unwrap();
    rt.block_on(async {
        for e in 0..50 {
            log.append(
                "t",
                &format!("e{e}"),
                SeqNo::ZERO,
                &[Bytes::from(vec![7u8; 3000])],
            )
            .await
            .unwrap();
        }
    });
    // A crash image: the main file and its WAL as they are on disk now.
    let image = tempfile::tempdir().unwrap();
    let real = image.path().join("real.db");
    std::fs::copy(&real_live, &real).unwrap();
    std::fs::copy(companion(&real_live, "-wal"), companion(&real, "-wal")).unwrap();
    assert!(std::fs::metadata(companion(&real, "-wal")).unwrap().len() > 0);
    drop(log);
    // As if a checkpoint had written page 1 (the new size) but not yet the
    // pages after the old end of the file.
    let mut bytes = std::fs::read(&real).unwrap();
    let pages = u32::from_be_bytes(bytes[28..32].try_into().unwrap());
    bytes[28..32].copy_from_slice(&(pages + 20).to_be_bytes());
    let counter: [u8; 4] = bytes[24..28].try_into().unwrap();
    bytes[92..96].copy_from_slice(&counter);
    std::fs::write(&real, &bytes).unwrap();
    let link = image.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let through_link = SqliteEventLog::open(&link).map(|_| ());
    let through_real = SqliteEventLog::open(&real).map(|_| ());
    assert!(
        through_real.is_ok(),
        "precondition: the real path opens: {through_real:?}"
    );
    assert!(
        through_link.is_ok(),
        "the same file through a symlink must open as well, got {through_link:?}"
    );
}

/// A damaged row whose position is not an integer is `Corrupt`, naming the
/// file and the entity type, like every other damaged column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_position_is_corrupt_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged-position.db");
    {
        let log = SqliteEventLog::open(&path).unwrap();
        log.append("t", "x", SeqNo::ZERO, &[event(1), event(2)])
            .await
            .unwrap();
    }
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("UPDATE events SET position = 'two' WHERE seq_no = 2")
            .unwrap();
    }
    let log = SqliteEventLog::open(&path).unwrap();
    let items: Vec<_> = timeout(
        LIMIT,
        log.events_by_type("t", Position::START)
            .take(2)
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let error = items
        .into_iter()
        .find_map(Result::err)
        .expect("the damaged row gives an error");
    assert!(
        matches!(error, EventLogError::Corrupt { .. })
            && error.to_string().contains("damaged-position.db"),
        "a non-integer position must be Corrupt naming the file and entity type, got {error:?} / \"{error}\""
    );
}

/// A damaged seq_no (text) is `Corrupt` for `last_seq_no` too, as it is for
/// `events_by_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_seq_no_is_corrupt_in_last_seq_no() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged-seq.db");
    {
        let log = SqliteEventLog::open(&path).unwrap();
        log.append("t", "x", SeqNo::ZERO, &[event(1), event(2)])
            .await
            .unwrap();
    }
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("UPDATE events SET seq_no = 'two' WHERE seq_no = 2")
            .unwrap();
    }
    let log = SqliteEventLog::open(&path).unwrap();
    let by_id: Result<Vec<_>, _> = log.events_by_id("t", "x", SeqNo::ZERO).try_collect().await;
    assert!(
        matches!(by_id, Err(EventLogError::Corrupt { .. })),
        "events_by_id: {by_id:?}"
    );
    let error = log.last_seq_no("t", "x").await.unwrap_err();
    assert!(
        matches!(error, EventLogError::Corrupt { .. })
            && error.to_string().contains("damaged-seq.db")
            && error.to_string().contains("t/x"),
        "last_seq_no on a damaged seq_no must be Corrupt naming file and entity, got {error:?} / \"{error}\""
    );
}

/// A read that fails for a reason other than corruption says which file and
/// which entity. Here another tool altered the file while the log had it open
/// (a lock held too long by another process takes the same path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_errors_name_the_file_and_entity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("altered-by-another.db");
    let log = SqliteEventLog::open(&path).unwrap();
    log.append("t", "x", SeqNo::ZERO, &[event(1)])
        .await
        .unwrap();
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch("ALTER TABLE events RENAME TO events_archived;")
        .unwrap();
    let error = log.last_seq_no("t", "x").await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("altered-by-another.db") && text.contains("t/x"),
        "a failed read must say which file and entity: \"{text}\""
    );
}

// ---------------------------------------------------------------------------
// Checked and found sound
// ---------------------------------------------------------------------------

const ROLE: &str = "READ_SIDE_CHILD_ROLE";
const DB: &str = "READ_SIDE_CHILD_DB";
const PROCS: usize = 3;
const ENTITIES: usize = 6;
const ROUNDS: u64 = 40;

/// The child role: appends to its own entities of type "mp" with several
/// events per append, concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_appender_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let db = std::env::var(DB).unwrap();
    let mut config = SqliteConfig::default();
    config.busy_timeout = Duration::from_secs(60);
    config.durability = eventsourced_sqlite::Durability::Fast;
    let log = SqliteEventLog::open_with(&db, config).unwrap();
    appender(&log, &role).await;
}

async fn appender(log: &SqliteEventLog, who: &str) {
    let mut tasks = Vec::new();
    for e in 0..ENTITIES {
        let log = log.clone();
        let id = format!("{who}-e{e}");
        tasks.push(tokio::spawn(async move {
            let mut last = 0u64;
            for round in 0..ROUNDS {
                let k = (round % 3) + 1;
                let events: Vec<Bytes> = (1..=k)
                    .map(|i| event(format!("{id}:{}", last + i)))
                    .collect();
                let new = log
                    .append("mp", &id, SeqNo::new(last), &events)
                    .await
                    .unwrap();
                assert_eq!(new.get(), last + k);
                last = new.get();
            }
            last
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn events_per_entity() -> u64 {
    (0..ROUNDS).map(|r| (r % 3) + 1).sum()
}

/// Several processes (and the parent) append to one file at once; live
/// followers (one from the start, one resumed from the middle) see every
/// event once, in position order, with each entity's seq_nos consecutive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_over_concurrent_appends_of_several_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("multi.db");
    let mut config = SqliteConfig::default();
    config.busy_timeout = Duration::from_secs(60);
    config.follow_poll_interval = Duration::from_millis(20);
    config.durability = eventsourced_sqlite::Durability::Fast;
    let log = SqliteEventLog::open_with(&path, config).unwrap();
    let total = (PROCS + 1) as u64 * ENTITIES as u64 * events_per_entity();
    let follower = {
        let log = log.clone();
        tokio::spawn(async move {
            timeout(
                Duration::from_secs(120),
                log.events_by_type("mp", Position::START)
                    .take(usize::try_from(total).unwrap())
                    .try_collect::<Vec<_>>(),
            )
            .await
            .expect("the follower must see every event")
            .unwrap()
        })
    };
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCS)
        .map(|p| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "child_appender_role",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE, format!("p{p}"))
                .env(DB, &path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    appender(&log, "parent").await;
    for mut c in children {
        let status = tokio::task::spawn_blocking(move || c.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "child failed: {status}");
    }
    let seen = follower.await.unwrap();
    let mut last_position = 0u64;
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for e in &seen {
        assert!(e.position.get() > last_position, "positions must increase");
        last_position = e.position.get();
        let last = last_seq.entry(e.id.clone()).or_default();
        assert_eq!(e.seq_no.get(), *last + 1, "{}: seq_nos consecutive", e.id);
        *last += 1;
        assert_eq!(e.event, event(format!("{}:{}", e.id, e.seq_no.get())));
    }
    assert_eq!(seen.len() as u64, total);
    assert_eq!(
        last_position, total,
        "positions are gapless across processes"
    );
    // Resuming from every 97th position yields exactly the later events.
    for from in (1..=total).step_by(97) {
        let first = timeout(
            LIMIT,
            log.events_by_type("mp", Position::new(from))
                .take(1)
                .try_collect::<Vec<_>>(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(first[0].position.get(), from);
        assert_eq!(first[0].id, seen[usize::try_from(from - 1).unwrap()].id);
    }
    // No more: a stream from past the end waits (nothing yielded).
    let mut past = Box::pin(log.events_by_type("mp", Position::new(total + 1)));
    assert!(
        timeout(Duration::from_millis(200), past.next())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_by_id_from_odd_seq_nos() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(dir.path().join("odd-seq.db")).unwrap();
    log.append("t", "x", SeqNo::ZERO, &[event(1), event(2), event(3)])
        .await
        .unwrap();
    let by = |from: u64| {
        let log = log.clone();
        async move {
            log.events_by_id("t", "x", SeqNo::new(from))
                .map_ok(|(s, _)| s.get())
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        }
    };
    assert_eq!(by(0).await, vec![1, 2, 3]);
    assert_eq!(by(1).await, vec![1, 2, 3]);
    assert_eq!(by(3).await, vec![3]);
    assert_eq!(by(4).await, Vec::<u64>::new());
    assert_eq!(by(i64::MAX as u64).await, Vec::<u64>::new());
    assert_eq!(by(i64::MAX as u64 + 1).await, Vec::<u64>::new());
    assert_eq!(by(u64::MAX).await, Vec::<u64>::new());
    // Position u64::MAX: a live stream that yields nothing, no panic.
    let mut s = Box::pin(log.events_by_type("t", Position::new(u64::MAX)));
    assert!(timeout(Duration::from_millis(200), s.next()).await.is_err());
    // Chunk boundaries: 4096 + 5 events, from inside the second chunk.
    let many: Vec<Bytes> = (1..=4101u64).map(event).collect();
    log.append("t", "many", SeqNo::ZERO, &many).await.unwrap();
    let all: Vec<_> = log
        .events_by_id("t", "many", SeqNo::ZERO)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 4101);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (s, e))| s.get() == i as u64 + 1 && *e == event(i + 1))
    );
    let by_type: Vec<_> = timeout(
        LIMIT,
        log.events_by_type("t", Position::START)
            .take(4104)
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        by_type
            .windows(2)
            .all(|w| w[1].position.get() == w[0].position.get() + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_and_type_names_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(dir.path().join("odd-ids.db")).unwrap();
    let long = "ü".repeat(200_000);
    let ids: Vec<String> = [
        "a.b",
        "a b",
        "*",
        ">",
        "a\0b",
        "a\0c",
        "a",
        "\0",
        "trailing\0",
        "ünï",
        "🎉",
        " ",
        "%",
        "'",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([long.clone()])
    .collect();
    for type_name in ["t.x", "t y", "*", ">", "t\0z", "日本", &long[..1000]] {
        for id in &ids {
            let last = log
                .append(type_name, id, SeqNo::ZERO, &[event(id)])
                .await
                .unwrap_or_else(|e| panic!("{type_name:?}/{id:?}: {e}"));
            assert_eq!(
                last,
                SeqNo::new(1),
                "{type_name:?}/{id:?} has its own sequence"
            );
        }
        for id in &ids {
            assert_eq!(log.last_seq_no(type_name, id).await.unwrap(), SeqNo::new(1));
            let evs: Vec<_> = log
                .events_by_id(type_name, id, SeqNo::ZERO)
                .try_collect()
                .await
                .unwrap();
            assert_eq!(evs, vec![(SeqNo::new(1), event(id))]);
        }
        let got: Vec<String> = timeout(
            LIMIT,
            log.events_by_type(type_name, Position::START)
                .take(ids.len())
                .map_ok(|e| e.id)
                .try_collect::<Vec<_>>(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got, ids);
    }
    // A type name that is a prefix / differs only by NUL shares nothing.
    assert_eq!(log.last_seq_no("t", "a").await.unwrap(), SeqNo::ZERO);
    assert_eq!(log.last_seq_no("t\0", "a").await.unwrap(), SeqNo::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_dropped_live_streams_leave_reads_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::default();
    config.read_connections = 2;
    let log = SqliteEventLog::open_with(dir.path().join("drops.db"), config).unwrap();
    log.append(
        "t",
        "x",
        SeqNo::ZERO,
        &(0..100).map(event).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    for i in 0..300usize {
        let mut s = Box::pin(log.events_by_type("t", Position::START));
        match i % 3 {
            0 => drop(s),
            1 => {
                let _ = s.next().now_or_never();
            }
            _ => {
                let _ = timeout(LIMIT, s.next()).await.unwrap();
            }
        }
    }
    let started = Instant::now();
    let all: Vec<_> = timeout(
        LIMIT,
        log.events_by_type("t", Position::START)
            .take(100)
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(all.len(), 100);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_private_and_huge_poll_interval_does_not_panic() {
    let mut config = SqliteConfig::default();
    config.follow_poll_interval = Duration::MAX;
    let a = SqliteEventLog::open_with(":memory:", config.clone()).unwrap();
    let b = SqliteEventLog::open_with(":memory:", config).unwrap();
    let mut follower = Box::pin(a.events_by_type("t", Position::START));
    assert!(
        timeout(Duration::from_millis(100), follower.next())
            .await
            .is_err()
    );
    b.append("t", "x", SeqNo::ZERO, &[event(1)]).await.unwrap();
    assert_eq!(a.last_seq_no("t", "x").await.unwrap(), SeqNo::ZERO);
    a.append("t", "x", SeqNo::ZERO, &[event(2)]).await.unwrap();
    let e = timeout(LIMIT, follower.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.event, event(2));
    // A file literally named ":memory:" elsewhere is a file.
    let dir = tempfile::tempdir().unwrap();
    let f = SqliteEventLog::open(dir.path().join(":memory:")).unwrap();
    assert!(f.path().is_some());
    // Paths that name no file are typed errors.
    for bad in ["", ".", "..", "/"] {
        let e = SqliteEventLog::open(bad).unwrap_err();
        assert!(!e.to_string().is_empty(), "{bad:?}");
    }
    // A directory is a typed error naming it.
    let e = SqliteEventLog::open(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains(&*dir.path().to_string_lossy()),
        "{e}"
    );
}
