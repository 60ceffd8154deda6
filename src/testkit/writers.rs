//! Writers that race for one entity, and a check of its stored log against
//! what they were told: the core of the backends' fault tests.
//!
//! Each writer sends [`Increase`] commands with values of its own (its tag
//! times a million, plus a counter) to a [`Counter`] entity, in rounds of
//! concurrent commands, and records in a [`Journal`] every value it sent and
//! what it was told: acknowledged, refused with a conflict, or failed. An
//! entity that answered with an error must have stopped: the writer checks
//! that it keeps answering with the same kind of error, then spawns a new one.
//! [`check_stored`] then holds the stored log against the journals of every
//! writer, whatever the test did meanwhile (a second writer, terminated
//! connections, a server restart, a writer process killed with `kill -9`).
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use eventsourced::testkit::{counter::{Counter, Get}, writers::{Journal, check_stored, write_rounds}};
//! use eventsourced::{EventLog, EventSourcedExt, MemoryEventLog, MemorySnapshotStore, SeqNo, SerdeJson};
//! use futures::TryStreamExt;
//! use std::time::{Duration, Instant};
//!
//! let (log, store) = (MemoryEventLog::new(), MemorySnapshotStore::new());
//! let spawn = || Counter::default().entity().snapshot_every(3)
//!     .spawn("shared".to_owned(), log.clone(), store.clone(), SerdeJson);
//! let (a, b) = (Journal::new(), Journal::new());
//! let until = Instant::now() + Duration::from_millis(200);
//! // Two writers of one entity, each through entities of its own.
//! futures::join!(
//!     write_rounds(&a, 1, 4, || Instant::now() < until, spawn),
//!     write_rounds(&b, 2, 4, || Instant::now() < until, spawn),
//! );
//! a.merge(&b);
//! let stored: Vec<_> = log.events_by_id("counter", "shared", SeqNo::new(1)).try_collect().await.unwrap();
//! let expected = check_stored(&a, &stored);
//! assert!(!a.refused().is_empty(), "the writers never raced: {}", a.summary());
//!
//! // A respawn (snapshot + later events) sees exactly the stored events.
//! let respawned = spawn().await.unwrap();
//! assert_eq!(respawned.handle_command(Get).await.unwrap(), Ok(expected.0));
//! # }
//! ```

use super::counter::{Counter, CounterEvent, Get, Increase};
use crate::{Binarize, EntityRef, HandleCommandError, SeqNo, SerdeJson, SpawnError};
use bytes::Bytes;
use std::{
    collections::HashSet,
    fs::File,
    future::Future,
    io::{self, Write},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::time::timeout;

/// How long a spawn or a command may take before the writer calls it a hang
/// and panics: long enough for a backend to time out on its own first.
pub const HANG: Duration = Duration::from_secs(30);

/// What a writer was told about one value.
///
/// ```
/// use eventsourced::testkit::writers::Told;
///
/// assert_eq!(Told::parse("acked"), Some(Told::Acknowledged));
/// assert_eq!(Told::parse(Told::Refused.as_str()), Some(Told::Refused));
/// assert_eq!(Told::parse("maybe"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// About to be sent; with no later record, the writer died waiting.
    Sent,
    /// The entity replied: the event is durable.
    Acknowledged,
    /// A conflict: another writer appended first, and nothing was written.
    Refused,
    /// Any other error: the event may or may not be stored.
    Failed,
}

impl Told {
    /// The word of this record in a journal file.
    ///
    /// ```
    /// use eventsourced::testkit::writers::Told;
    /// assert_eq!(Told::Sent.as_str(), "sent");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Told::Sent => "sent",
            Told::Acknowledged => "acked",
            Told::Refused => "refused",
            Told::Failed => "failed",
        }
    }

    /// The record a journal file's word stands for.
    ///
    /// ```
    /// use eventsourced::testkit::writers::Told;
    /// assert_eq!(Told::parse("failed"), Some(Told::Failed));
    /// ```
    pub fn parse(word: &str) -> Option<Told> {
        [Told::Sent, Told::Acknowledged, Told::Refused, Told::Failed]
            .into_iter()
            .find(|told| told.as_str() == word)
    }
}

/// What writers were told, value by value, plus anything they saw that
/// breaks the contract. It can mirror each record to a file as it happens,
/// one `write` per line, so that the journal of a writer process killed with
/// `kill -9` can be read by the test that killed it ([`Journal::read`]).
///
/// ```
/// use eventsourced::testkit::writers::{Journal, Told};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("writer.journal");
/// let journal = Journal::to_file(&path).unwrap();
/// journal.record(7, Told::Sent);
/// journal.record(7, Told::Acknowledged);
/// journal.record(8, Told::Sent); // the writer died before the reply
/// let read = Journal::read(&path).unwrap();
/// assert_eq!(read.acknowledged(), vec![7]);
/// assert_eq!(read.sent(), vec![7, 8]);
/// ```
#[derive(Debug, Default)]
pub struct Journal {
    inner: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    told: Vec<(u64, Told)>,
    problems: Vec<String>,
    spawn_failures: Vec<String>,
    file: Option<File>,
}

impl Journal {
    /// An empty journal kept in memory.
    ///
    /// ```
    /// let journal = eventsourced::testkit::writers::Journal::new();
    /// assert!(journal.sent().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty journal that also writes each record to `path` (created or
    /// truncated).
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let journal = Journal::to_file(dir.path().join("j")).unwrap();
    /// journal.record(1, Told::Sent);
    /// let text = std::fs::read_to_string(dir.path().join("j")).unwrap();
    /// assert_eq!(text, "sent 1\n");
    /// ```
    pub fn to_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let journal = Self::new();
        journal.lock().file = Some(File::create(path)?);
        Ok(journal)
    }

    /// The journal a writer left in `path`. A torn last line (the writer was
    /// killed while writing it) is ignored.
    ///
    /// ```
    /// use eventsourced::testkit::writers::Journal;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("j");
    /// std::fs::write(&path, "sent 1\nrefused 1\nproblem it answered\nsent 2\nack").unwrap();
    /// let journal = Journal::read(&path).unwrap();
    /// assert_eq!(journal.refused(), vec![1]);
    /// assert_eq!(journal.problems(), vec!["it answered".to_owned()]);
    /// assert_eq!(journal.sent(), vec![1, 2]);
    /// ```
    pub fn read(path: impl AsRef<Path>) -> io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let journal = Self::new();
        let mut records = journal.lock();
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else {
                break; // torn
            };
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            match (word, Told::parse(word), rest.parse::<u64>()) {
                ("problem", ..) => records.problems.push(rest.to_owned()),
                ("spawn-failed", ..) => records.spawn_failures.push(rest.to_owned()),
                (_, Some(told), Ok(value)) => records.told.push((value, told)),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("not a journal line: {line:?}"),
                    ));
                }
            }
        }
        drop(records);
        Ok(journal)
    }

    /// Records what the writer was told about `value`.
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    ///
    /// let journal = Journal::new();
    /// journal.record(3, Told::Failed);
    /// assert_eq!(journal.failed(), vec![3]);
    /// ```
    pub fn record(&self, value: u64, told: Told) {
        let mut records = self.lock();
        records.write_line(&format!("{} {value}", told.as_str()));
        records.told.push((value, told));
    }

    /// Records something a writer saw that breaks the contract;
    /// [`check_stored`] fails on any.
    ///
    /// ```
    /// use eventsourced::testkit::writers::Journal;
    ///
    /// let journal = Journal::new();
    /// journal.problem("a stopped entity answered");
    /// assert_eq!(journal.problems().len(), 1);
    /// ```
    pub fn problem(&self, text: &str) {
        let text = text.replace('\n', " ");
        let mut records = self.lock();
        records.write_line(&format!("problem {text}"));
        records.problems.push(text);
    }

    /// Records a spawn that returned an error (the writer tries again). Tests
    /// of backends that stay up can require there are none.
    ///
    /// ```
    /// use eventsourced::testkit::writers::Journal;
    ///
    /// let journal = Journal::new();
    /// journal.spawn_failed("connection refused");
    /// assert_eq!(journal.spawn_failures(), vec!["connection refused".to_owned()]);
    /// ```
    pub fn spawn_failed(&self, text: &str) {
        let text = text.replace('\n', " ");
        let mut records = self.lock();
        records.write_line(&format!("spawn-failed {text}"));
        records.spawn_failures.push(text);
    }

    /// Adds the records of `other` to this journal (in memory only).
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    ///
    /// let (a, b) = (Journal::new(), Journal::new());
    /// a.record(1, Told::Acknowledged);
    /// b.record(2, Told::Acknowledged);
    /// a.merge(&b);
    /// assert_eq!(a.acknowledged(), vec![1, 2]);
    /// ```
    pub fn merge(&self, other: &Journal) {
        let theirs = other.lock();
        let (told, problems, failures) = (
            theirs.told.clone(),
            theirs.problems.clone(),
            theirs.spawn_failures.clone(),
        );
        drop(theirs);
        let mut mine = self.lock();
        mine.told.extend(told);
        mine.problems.extend(problems);
        mine.spawn_failures.extend(failures);
    }

    /// Every value sent, in order.
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    /// let journal = Journal::new();
    /// journal.record(5, Told::Sent);
    /// assert_eq!(journal.sent(), vec![5]);
    /// ```
    pub fn sent(&self) -> Vec<u64> {
        self.values(Told::Sent)
    }

    /// The values whose commands were acknowledged.
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    /// let journal = Journal::new();
    /// journal.record(5, Told::Acknowledged);
    /// assert_eq!(journal.acknowledged(), vec![5]);
    /// ```
    pub fn acknowledged(&self) -> Vec<u64> {
        self.values(Told::Acknowledged)
    }

    /// The values whose commands were refused with a conflict.
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    /// let journal = Journal::new();
    /// journal.record(5, Told::Refused);
    /// assert_eq!(journal.refused(), vec![5]);
    /// ```
    pub fn refused(&self) -> Vec<u64> {
        self.values(Told::Refused)
    }

    /// The values whose commands failed with another error.
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    /// let journal = Journal::new();
    /// journal.record(5, Told::Failed);
    /// assert_eq!(journal.failed(), vec![5]);
    /// ```
    pub fn failed(&self) -> Vec<u64> {
        self.values(Told::Failed)
    }

    /// What the writers saw that breaks the contract.
    ///
    /// ```
    /// let journal = eventsourced::testkit::writers::Journal::new();
    /// assert!(journal.problems().is_empty());
    /// ```
    pub fn problems(&self) -> Vec<String> {
        self.lock().problems.clone()
    }

    /// The errors of spawns that failed.
    ///
    /// ```
    /// let journal = eventsourced::testkit::writers::Journal::new();
    /// assert!(journal.spawn_failures().is_empty());
    /// ```
    pub fn spawn_failures(&self) -> Vec<String> {
        self.lock().spawn_failures.clone()
    }

    /// The counts, for a test's output.
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    /// let journal = Journal::new();
    /// journal.record(5, Told::Sent);
    /// journal.record(5, Told::Acknowledged);
    /// assert_eq!(journal.summary(), "sent 1, acknowledged 1, refused 0, failed 0, spawns failed 0");
    /// ```
    pub fn summary(&self) -> String {
        format!(
            "sent {}, acknowledged {}, refused {}, failed {}, spawns failed {}",
            self.sent().len(),
            self.acknowledged().len(),
            self.refused().len(),
            self.failed().len(),
            self.spawn_failures().len()
        )
    }

    /// How many values were sent without a later record: commands of a
    /// writer killed while it waited for them.
    ///
    /// ```
    /// use eventsourced::testkit::writers::{Journal, Told};
    /// let journal = Journal::new();
    /// journal.record(5, Told::Sent);
    /// journal.record(6, Told::Sent);
    /// journal.record(6, Told::Refused);
    /// assert_eq!(journal.in_flight(), 1);
    /// ```
    pub fn in_flight(&self) -> usize {
        let outcomes = self.acknowledged().len() + self.refused().len() + self.failed().len();
        self.sent().len().saturating_sub(outcomes)
    }

    fn values(&self, kind: Told) -> Vec<u64> {
        let records = self.lock();
        let values = records.told.iter().filter(|(_, told)| *told == kind);
        values.map(|(value, _)| *value).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Records {
    fn write_line(&mut self, line: &str) {
        if let Some(file) = &mut self.file {
            file.write_all(format!("{line}\n").as_bytes())
                .expect("write the journal file");
        }
    }
}

/// Writes to one [`Counter`] entity while `keep_going()` holds, recording
/// everything in `journal`: each round spawns an entity with `spawn` if the
/// last one stopped (a failed spawn is recorded and tried again 20 ms later),
/// sends it `round` [`Increase`] commands at once and awaits them all. After
/// an error, the entity must answer a further command with an error of the
/// same kind (a conflict stays a conflict), or a problem is recorded.
///
/// Values are `tag × 1 000 000 + n` for n = 1, 2, …: give every writer, and
/// every incarnation of a writer process, a tag of its own. Panics if a spawn
/// or a command takes longer than [`HANG`].
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// use eventsourced::testkit::{counter::Counter, writers::{Journal, write_rounds}};
/// use eventsourced::{EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson};
///
/// let log = MemoryEventLog::new();
/// let journal = Journal::new();
/// let mut rounds = 0;
/// let spawn = || Counter::default().entity().spawn("c".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson);
/// write_rounds(&journal, 7, 3, || { rounds += 1; rounds <= 2 }, spawn).await;
/// assert_eq!(journal.acknowledged(), vec![7_000_001, 7_000_002, 7_000_003, 7_000_004, 7_000_005, 7_000_006]);
/// # }
/// ```
pub async fn write_rounds<S, F>(
    journal: &Journal,
    tag: u64,
    round: usize,
    mut keep_going: impl FnMut() -> bool,
    mut spawn: S,
) where
    S: FnMut() -> F,
    F: Future<Output = Result<EntityRef<Counter>, SpawnError>>,
{
    let mut n = 0;
    let mut current = None;
    while keep_going() {
        let entity = match current.take() {
            Some(entity) => entity,
            None => match timeout(HANG, spawn()).await.expect("a spawn hung") {
                Ok(entity) => entity,
                Err(error) => {
                    journal.spawn_failed(&error.to_string());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let sends: Vec<_> = (0..round)
            .map(|_| {
                n += 1;
                let value = tag * 1_000_000 + n;
                journal.record(value, Told::Sent);
                let entity = entity.clone();
                tokio::spawn(async move {
                    let result = timeout(HANG, entity.handle_command(Increase(value))).await;
                    (value, result)
                })
            })
            .collect();
        let mut cause: Option<HandleCommandError> = None;
        for send in sends {
            let (value, result) = send.await.expect("a send task panicked");
            match result.expect("a command hung") {
                Ok(Ok(_)) => journal.record(value, Told::Acknowledged),
                Ok(Err(rejected)) => {
                    journal.problem(&format!("{value} was rejected: {rejected:?}"));
                }
                Err(error) => {
                    let told = if error.is_conflict() {
                        Told::Refused
                    } else {
                        Told::Failed
                    };
                    journal.record(value, told);
                    cause = Some(error);
                }
            }
        }
        match cause {
            None => current = Some(entity),
            Some(cause) => check_stopped(journal, &entity, &cause).await,
        }
    }
}

/// After `cause`, the entity must keep answering with an error of its kind.
async fn check_stopped(journal: &Journal, entity: &EntityRef<Counter>, cause: &HandleCommandError) {
    let again = timeout(HANG, entity.handle_command(Get))
        .await
        .expect("a send to a stopped entity hung");
    match again {
        Ok(reply) => journal.problem(&format!("an entity stopped by {cause} answered {reply:?}")),
        Err(later) if later.is_conflict() != cause.is_conflict() => journal.problem(&format!(
            "an entity stopped by {cause} later answered {later}"
        )),
        Err(_) => {}
    }
}

/// Holds the stored events of the writers' entity (read with
/// `events_by_id(.., SeqNo::new(1))`) against the merged journal of every
/// writer, and returns the state a respawned entity must have. Panics unless:
///
/// - the seq_nos are 1, 2, 3, … without gaps, and every event is an `Increase`d
///   value that is stored once;
/// - every acknowledged value is stored;
/// - no value refused with a conflict is stored;
/// - every stored value was sent (stored values that were neither acknowledged
///   nor failed are only possible for a writer that was killed while waiting);
/// - no writer recorded a problem.
///
/// ```
/// use eventsourced::testkit::{counter::{Counter, CounterEvent}, writers::{Journal, Told, check_stored}};
/// use eventsourced::{Binarize, SeqNo, SerdeJson};
///
/// let journal = Journal::new();
/// for (value, told) in [(5, Told::Acknowledged), (6, Told::Refused)] {
///     journal.record(value, Told::Sent);
///     journal.record(value, told);
/// }
/// let stored = vec![(SeqNo::new(1), SerdeJson.encode(&CounterEvent::Increased(5)).unwrap())];
/// assert_eq!(check_stored(&journal, &stored), Counter(5));
///
/// let lost = std::panic::catch_unwind(|| check_stored(&journal, &[]));
/// assert!(lost.is_err(), "acknowledged 5 is not stored");
/// ```
pub fn check_stored(journal: &Journal, stored: &[(SeqNo, Bytes)]) -> Counter {
    let problems = journal.problems();
    assert!(problems.is_empty(), "the writers saw: {problems:?}");
    let mut values = Vec::with_capacity(stored.len());
    for (i, (seq_no, bytes)) in stored.iter().enumerate() {
        assert_eq!(seq_no.get(), i as u64 + 1, "the seq_nos have a gap");
        match SerdeJson.decode(bytes.clone()) {
            Ok(CounterEvent::Increased(value)) => values.push(value),
            other => panic!("event {seq_no} is not a writer's: {other:?}"),
        }
    }
    let stored: HashSet<u64> = values.iter().copied().collect();
    assert_eq!(stored.len(), values.len(), "an event is stored twice");
    for value in journal.acknowledged() {
        assert!(stored.contains(&value), "acknowledged {value} is lost");
    }
    let refused: HashSet<u64> = journal.refused().into_iter().collect();
    for value in &refused {
        assert!(
            !stored.contains(value),
            "{value} was refused with a conflict but is stored"
        );
    }
    let sent: HashSet<u64> = journal.sent().into_iter().collect();
    for value in &values {
        assert!(sent.contains(value), "stored {value} was never sent");
    }
    Counter(values.iter().sum())
}

/// Starts this test binary again, as a child process that runs only the test
/// `name` (which should do nothing unless one of `env`'s variables is set),
/// with `env` added to its environment. For writers in processes of their
/// own, which a test can kill with [`Child::kill`] (`SIGKILL` on Unix).
///
/// ```no_run
/// use eventsourced::testkit::writers::run_test_in_child;
///
/// // In a test binary that has a test `child_writer`, which writes to the
/// // journal that `CHILD_JOURNAL` names:
/// let mut child = run_test_in_child("child_writer", &[("CHILD_JOURNAL", "/tmp/child.journal")]).unwrap();
/// std::thread::sleep(std::time::Duration::from_millis(500));
/// child.kill().unwrap(); // kill -9
/// child.wait().unwrap();
/// ```
pub fn run_test_in_child(name: &str, env: &[(&str, &str)]) -> io::Result<Child> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    command.envs(env.iter().copied());
    command.spawn()
}

/// The variable naming a killed writer's journal file (see [`kill_writers`]).
pub const CHILD_JOURNAL: &str = "EVENTSOURCED_TESTKIT_CHILD_JOURNAL";

/// The variable holding a killed writer's tag (see [`kill_writers`]).
pub const CHILD_TAG: &str = "EVENTSOURCED_TESTKIT_CHILD_TAG";

/// In a writer process started by [`kill_writers`]: its journal (mirrored to
/// its file) and its tag. `None` in any other process, where the child test
/// should return at once.
///
/// ```
/// // Not started by kill_writers: nothing to do.
/// assert!(eventsourced::testkit::writers::child_writer().is_none());
/// ```
pub fn child_writer() -> Option<(Journal, u64)> {
    let path = std::env::var(CHILD_JOURNAL).ok()?;
    let tag = std::env::var(CHILD_TAG).ok()?.parse().ok()?;
    let journal = Journal::to_file(path).expect("create the child's journal");
    Some((journal, tag))
}

/// What [`kill_writers`] reports.
#[derive(Debug)]
pub struct KilledWriters {
    /// The records of every child, merged.
    pub journal: Journal,
    /// How many children were started (and killed).
    pub children: usize,
    /// How many of them got at least one event acknowledged.
    pub acknowledged_something: usize,
}

/// Starts the test `child_test` of this binary as a writer process again and
/// again, one after the other, for `run_for`, and kills each with `kill -9`
/// after 0.3 to 1.2 s. Each child gets `env`, plus [`CHILD_JOURNAL`] (a file
/// in `dir`) and [`CHILD_TAG`] (101, 102, …): it starts with
/// [`child_writer`] and writes until it is killed. Returns their merged
/// journals.
///
/// ```no_run
/// # async fn f(dir: &std::path::Path) {
/// use eventsourced::testkit::writers::kill_writers;
/// use std::time::Duration;
///
/// // In a test binary with a test `child_process_writer` that calls `child_writer()`:
/// let killed = kill_writers("child_process_writer", &[("DB", "/tmp/x.db")], dir, Duration::from_secs(5)).await;
/// assert!(killed.acknowledged_something > 0);
/// # }
/// ```
pub async fn kill_writers(
    child_test: &str,
    env: &[(&str, &str)],
    dir: &Path,
    run_for: Duration,
) -> KilledWriters {
    let started = Instant::now();
    let mut journals: Vec<PathBuf> = vec![];
    while started.elapsed() < run_for {
        let tag = 101 + journals.len() as u64;
        let path = dir.join(format!("child-{tag}.journal"));
        let mut vars = env.to_vec();
        let (path_text, tag_text) = (path.to_str().expect("a UTF-8 path"), tag.to_string());
        vars.extend([(CHILD_JOURNAL, path_text), (CHILD_TAG, tag_text.as_str())]);
        let mut child = run_test_in_child(child_test, &vars).expect("start a child");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        tokio::time::sleep(Duration::from_millis(300 + u64::from(nanos) % 900)).await;
        child.kill().expect("kill -9 the child");
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait for the child");
        assert!(!status.success(), "the child ended before it was killed");
        journals.push(path);
    }
    let journal = Journal::new();
    let mut acknowledged_something = 0;
    for path in &journals {
        // A child killed before its runtime started has no journal yet.
        if let Ok(child) = Journal::read(path) {
            acknowledged_something += usize::from(!child.acknowledged().is_empty());
            journal.merge(&child);
        }
    }
    KilledWriters {
        journal,
        children: journals.len(),
        acknowledged_something,
    }
}
