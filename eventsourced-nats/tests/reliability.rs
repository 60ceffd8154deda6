//! Faults: the server killed and restarted under load, two processes writing
//! one entity, bad credentials, an unreachable server.

mod support;

use bytes::Bytes;
use eventsourced::{
    EventEnvelope, EventLog, EventLogError, Position, SeqNo, testkit::unique_type_name,
};
use eventsourced_nats::{NatsAuth, NatsConfig, NatsError, NatsEventLog, Secret};
use futures::{StreamExt, TryStreamExt};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use support::TestServer;
use tokio::time::{sleep, timeout};

/// Acknowledged (seq_no, event) per entity id.
type Acked = HashMap<String, Vec<(SeqNo, Bytes)>>;

/// No single operation may take longer than this: "nothing hangs".
const HANG: Duration = Duration::from_secs(20);

async fn all_events(log: &NatsEventLog, type_name: &str, id: &str) -> Vec<(SeqNo, Bytes)> {
    timeout(
        HANG,
        log.events_by_id(type_name, id, SeqNo::new(1))
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("events_by_id must not hang")
    .expect("events_by_id must succeed")
}

/// Checks that the entity holds seq_nos 1..=n without gaps, every
/// acknowledged (seq_no, event) among them, and no event twice.
fn check_history(id: &str, stored: &[(SeqNo, Bytes)], acked: &[(SeqNo, Bytes)]) {
    for (n, (seq_no, _)) in (1..).zip(stored) {
        assert_eq!(seq_no.get(), n, "{id}: seq_nos must be gapless from 1");
    }
    let mut seen = HashSet::new();
    for (_, event) in stored {
        assert!(
            seen.insert(event.clone()),
            "{id}: event {event:?} is stored twice"
        );
    }
    let by_seq: HashMap<SeqNo, &Bytes> = stored.iter().map(|(s, e)| (*s, e)).collect();
    for (seq_no, event) in acked {
        assert_eq!(
            by_seq.get(seq_no).copied(),
            Some(event),
            "{id}: acknowledged event {seq_no} must be stored exactly as acknowledged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_killed_and_restarted_under_load() {
    const WRITERS: usize = 10;
    const ACKS_BEFORE_KILL: usize = 300;
    const ACKS_AFTER_RESTART: usize = 20;

    let mut server = TestServer::start(&[]);
    let mut config = NatsConfig::from_url(&server.url());
    config.request_timeout = Duration::from_secs(2);
    let log = NatsEventLog::new(config).await.expect("connect");
    log.setup().await.expect("setup");
    let type_name = unique_type_name("restart");

    let acked: Arc<Mutex<Acked>> = Arc::default();
    let total_acks = Arc::new(AtomicUsize::new(0));
    let technical_errors = Arc::new(AtomicUsize::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // A live reader of the type across the outage, resuming after an error
    // from the last position it handled, as a projection does.
    let followed: Arc<Mutex<Vec<EventEnvelope>>> = Arc::default();
    let follower = tokio::spawn({
        let (log, type_name, followed) = (log.clone(), type_name.clone(), followed.clone());
        async move {
            let mut from = Position::START;
            loop {
                let mut live = Box::pin(log.events_by_type(&type_name, from));
                while let Some(Ok(envelope)) = live.next().await {
                    from = envelope.position.next();
                    followed.lock().expect("lock").push(envelope);
                }
                sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (log, type_name, acked) = (log.clone(), type_name.clone(), acked.clone());
            let (total_acks, technical_errors) = (total_acks.clone(), technical_errors.clone());
            let (restarted, stop) = (restarted.clone(), stop.clone());
            tokio::spawn(async move {
                let id = format!("writer.{w}");
                let mut last = SeqNo::ZERO;
                let mut acks_after_restart = 0;
                let mut attempt = 0u64;
                while !(stop.load(Ordering::SeqCst) && acks_after_restart >= ACKS_AFTER_RESTART) {
                    attempt += 1;
                    let event = Bytes::from(format!("{id}/{attempt}"));
                    let result = timeout(
                        HANG,
                        log.append(&type_name, &id, last, std::slice::from_ref(&event)),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("{id}: an append hung for {HANG:?}"));
                    match result {
                        Ok(new_last) => {
                            assert_eq!(new_last, last.next());
                            last = new_last;
                            acked
                                .lock()
                                .expect("lock")
                                .entry(id.clone())
                                .or_default()
                                .push((new_last, event));
                            total_acks.fetch_add(1, Ordering::SeqCst);
                            if restarted.load(Ordering::SeqCst) {
                                acks_after_restart += 1;
                            }
                        }
                        // An earlier append that failed may have been stored.
                        Err(EventLogError::Conflict { actual, .. }) => last = actual,
                        Err(EventLogError::Backend { .. }) => {
                            technical_errors.fetch_add(1, Ordering::SeqCst);
                            // Learn what the log holds once it answers again.
                            loop {
                                let read = timeout(HANG, log.last_seq_no(&type_name, &id))
                                    .await
                                    .unwrap_or_else(|_| {
                                        panic!("{id}: last_seq_no hung for {HANG:?}")
                                    });
                                match read {
                                    Ok(actual) => {
                                        last = actual;
                                        break;
                                    }
                                    Err(EventLogError::Backend { .. }) => {
                                        sleep(Duration::from_millis(100)).await;
                                    }
                                    Err(other) => panic!("{id}: unexpected error {other}"),
                                }
                            }
                        }
                        Err(other) => panic!("{id}: unexpected error {other}"),
                    }
                }
            })
        })
        .collect();

    let wait_for = |count: usize| {
        let total_acks = total_acks.clone();
        async move {
            timeout(Duration::from_secs(60), async {
                while total_acks.load(Ordering::SeqCst) < count {
                    sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{count} appends must be acknowledged within 60s"));
        }
    };
    wait_for(ACKS_BEFORE_KILL).await;
    tokio::task::block_in_place(|| server.kill());
    // While the server is down, commands fail with technical errors, in time.
    // (Of another type: the client may still send a failed append's message
    // after it reconnects, so its outcome is unknown.)
    let down_type = format!("{type_name}-down");
    let down = timeout(
        HANG,
        log.append(&down_type, "while-down", SeqNo::ZERO, &[Bytes::from("x")]),
    )
    .await
    .expect("an append while the server is down must not hang");
    assert!(
        matches!(down, Err(EventLogError::Backend { .. })),
        "an append while the server is down must be a technical error, got {down:?}"
    );
    let down = timeout(HANG, log.last_seq_no(&down_type, "while-down"))
        .await
        .expect("a read while the server is down must not hang");
    assert!(
        matches!(down, Err(EventLogError::Backend { .. })),
        "a read while the server is down must be a technical error, got {down:?}"
    );
    tokio::task::block_in_place(|| server.restart());
    restarted.store(true, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        timeout(Duration::from_secs(90), writer)
            .await
            .expect("every writer must get new appends through after the restart")
            .expect("writer must not panic");
    }

    println!(
        "{} appends acknowledged, {} technical errors during the outage",
        total_acks.load(Ordering::SeqCst),
        technical_errors.load(Ordering::SeqCst)
    );
    let acked = acked.lock().expect("lock").clone();
    let mut stored_by_id = HashMap::new();
    for w in 0..WRITERS {
        let id = format!("writer.{w}");
        let stored = all_events(&log, &type_name, &id).await;
        check_history(&id, &stored, acked.get(&id).map_or(&[], Vec::as_slice));
        stored_by_id.insert(id, stored);
    }

    // The live reader saw every stored event once, in order.
    let total: usize = stored_by_id.values().map(Vec::len).sum();
    timeout(Duration::from_secs(30), async {
        while followed.lock().expect("lock").len() < total {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the live reader must catch up with all {total} events"));
    sleep(Duration::from_millis(300)).await;
    follower.abort();
    let followed = followed.lock().expect("lock").clone();
    assert_eq!(
        followed.len(),
        total,
        "the live reader must see each event once"
    );
    assert!(
        followed.windows(2).all(|w| w[0].position < w[1].position),
        "live positions must increase"
    );
    let mut per_id: HashMap<String, Vec<(SeqNo, Bytes)>> = HashMap::new();
    for envelope in followed {
        per_id
            .entry(envelope.id)
            .or_default()
            .push((envelope.seq_no, envelope.event));
    }
    assert_eq!(
        per_id, stored_by_id,
        "the live reader must see exactly the stored events"
    );
}

/// Set in the child process of [`two_processes_race_on_one_entity`].
const CHILD_ENV: &str = "EVENTSOURCED_NATS_RACE_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_race_on_one_entity() {
    const ATTEMPTS: u64 = 300;

    if let Ok(spec) = std::env::var(CHILD_ENV) {
        // The child: write, then report what was acknowledged on stdout.
        let [url, type_name, id, start_at]: [&str; 4] = spec
            .split('\n')
            .collect::<Vec<_>>()
            .try_into()
            .expect("child spec: url, type, id, start time");
        let (wins, conflicts) = race(url, type_name, id, start_at, "child", ATTEMPTS).await;
        // libtest prints "test <name> ... " without a newline before our output.
        println!();
        for (seq_no, event) in wins {
            println!(
                "ACK {seq_no} {}",
                std::str::from_utf8(&event).expect("utf-8")
            );
        }
        println!("CONFLICTS {conflicts}");
        return;
    }

    let url = support::nats_url();
    let log = NatsEventLog::new(NatsConfig::from_url(&url))
        .await
        .expect("connect");
    log.setup().await.expect("setup");
    let type_name = unique_type_name("two-processes");
    let id = "the.contended one";
    let start_at = (SystemTime::now() + Duration::from_secs(3))
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_millis()
        .to_string();
    let child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "two_processes_race_on_one_entity",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{url}\n{type_name}\n{id}\n{start_at}"))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn the second process");
    let (parent_wins, parent_conflicts) =
        race(&url, &type_name, id, &start_at, "parent", ATTEMPTS).await;
    let output = timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the second process must finish")
        .expect("its output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the second process failed: {stdout}"
    );
    let mut child_wins = Vec::new();
    let mut child_conflicts = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (seq_no, event) = rest.split_once(' ').expect("ACK <seq_no> <event>");
            child_wins.push((
                SeqNo::new(seq_no.parse().expect("seq_no")),
                Bytes::from(event.to_owned()),
            ));
        } else if let Some(n) = line.strip_prefix("CONFLICTS ") {
            child_conflicts = Some(n.parse::<u64>().expect("count"));
        }
    }
    let child_conflicts = child_conflicts.expect("the child reports its conflicts");

    // Each expected seq_no was tried by both processes: one won, one conflicted.
    let wins = u64::try_from(parent_wins.len() + child_wins.len()).expect("count");
    assert_eq!(wins, ATTEMPTS, "exactly one process wins each race");
    assert_eq!(
        parent_conflicts + child_conflicts,
        ATTEMPTS,
        "the other process gets a conflict in each race"
    );
    let stored = all_events(&log, &type_name, id).await;
    assert_eq!(
        u64::try_from(stored.len()).expect("count"),
        ATTEMPTS,
        "no duplicate seq_no"
    );
    let all_wins: Vec<_> = parent_wins.into_iter().chain(child_wins).collect();
    check_history(id, &stored, &all_wins);
    println!(
        "two processes: parent won {}, child won {}",
        all_wins
            .iter()
            .filter(|(_, e)| e.starts_with(b"parent"))
            .count(),
        all_wins
            .iter()
            .filter(|(_, e)| e.starts_with(b"child"))
            .count()
    );
}

/// Appends with expected seq_no 0, 1, .., attempts - 1 regardless of the
/// outcome: returns the wins and the number of conflicts.
async fn race(
    url: &str,
    type_name: &str,
    id: &str,
    start_at: &str,
    role: &str,
    attempts: u64,
) -> (Vec<(SeqNo, Bytes)>, u64) {
    let log = NatsEventLog::new(NatsConfig::from_url(url))
        .await
        .expect("connect");
    let start_at: u64 = start_at.parse().expect("millis");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_millis();
    let wait = u64::try_from(u128::from(start_at).saturating_sub(now)).unwrap_or(0);
    sleep(Duration::from_millis(wait)).await;
    let mut wins = Vec::new();
    let mut conflicts = 0;
    for expected in 0..attempts {
        let event = Bytes::from(format!("{role}-{expected}"));
        let result = timeout(
            HANG,
            log.append(
                type_name,
                id,
                SeqNo::new(expected),
                std::slice::from_ref(&event),
            ),
        )
        .await
        .expect("an append must not hang");
        match result {
            Ok(last) => {
                assert_eq!(last, SeqNo::new(expected + 1));
                wins.push((last, event));
            }
            Err(EventLogError::Conflict { actual, .. }) => {
                assert!(
                    actual.get() > expected,
                    "a conflict means another writer is ahead"
                );
                conflicts += 1;
            }
            Err(other) => panic!("{role}: an append must win or conflict, got {other}"),
        }
    }
    (wins, conflicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_credentials_are_a_typed_error_that_says_what_to_fix() {
    let server = TestServer::start(&["--user", "app", "--pass", "right-password"]);
    let mut config = NatsConfig::from_url(&server.url());
    config.auth = NatsAuth::UserPassword {
        user: "app".to_owned(),
        password: Secret::new("wrong-password"),
    };
    let error = timeout(HANG, NatsEventLog::new(config.clone()))
        .await
        .expect("connecting must not hang")
        .expect_err("wrong password must be refused");
    let text = error.to_string();
    assert!(
        matches!(error, NatsError::Unauthorized { .. }),
        "got {error:?}"
    );
    assert!(text.contains("check `auth`"), "{text}");
    assert!(
        !text.contains("wrong-password") && !format!("{error:?}").contains("wrong-password"),
        "the password must not appear: {text}"
    );

    config.auth = NatsAuth::UserPassword {
        user: "app".to_owned(),
        password: Secret::new("right-password"),
    };
    let log = timeout(HANG, NatsEventLog::new(config))
        .await
        .expect("in time")
        .expect("the right password connects");
    log.setup().await.expect("setup");
    assert!(!format!("{log:?}").contains("right-password"));

    let token_server = TestServer::start(&["--auth", "right-token"]);
    let mut config = NatsConfig::from_url(&token_server.url());
    config.auth = NatsAuth::Token {
        token: Secret::new("wrong-token"),
    };
    let error = timeout(HANG, NatsEventLog::new(config))
        .await
        .expect("in time")
        .expect_err("a wrong token must be refused");
    assert!(
        matches!(error, NatsError::Unauthorized { .. }),
        "got {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_server_is_a_typed_error_that_says_what_to_fix() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let error = timeout(HANG, NatsEventLog::new(NatsConfig::from_url(&url)))
        .await
        .expect("connecting must not hang")
        .expect_err("nobody listens");
    assert!(
        matches!(error, NatsError::Unreachable { .. }),
        "got {error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&url) && text.contains("start nats-server"),
        "{text}"
    );

    let error = NatsEventLog::new(NatsConfig::from_url("http://127.0.0.1:1"))
        .await
        .expect_err("not a NATS URL");
    assert!(
        matches!(
            error,
            NatsError::Config {
                field: "servers",
                ..
            }
        ),
        "got {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_without_jetstream_is_a_typed_error_at_setup() {
    let server = TestServer::start_without_jetstream();
    let log = timeout(HANG, NatsEventLog::new(NatsConfig::from_url(&server.url())))
        .await
        .expect("in time")
        .expect("connecting works without JetStream");
    let error = timeout(HANG, log.setup())
        .await
        .expect("setup must not hang")
        .expect_err("no JetStream, no stream");
    assert!(
        matches!(error, NatsError::JetStreamUnavailable { .. }),
        "got {error:?}"
    );
    assert!(error.to_string().contains("-js"), "{error}");
    let store = timeout(
        HANG,
        eventsourced_nats::NatsSnapshotStore::new(NatsConfig::from_url(&server.url())),
    )
    .await
    .expect("in time")
    .expect("connect");
    let error = timeout(HANG, store.setup())
        .await
        .expect("setup must not hang")
        .expect_err("no JetStream, no bucket");
    assert!(
        matches!(
            error,
            NatsError::JetStreamUnavailable { .. } | NatsError::Setup { .. }
        ),
        "got {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_credentials_file_is_a_typed_error() {
    let mut config = NatsConfig::from_url("nats://127.0.0.1:1");
    config.auth = NatsAuth::CredentialsFile {
        path: "/nonexistent/eventsourced/app.creds".into(),
    };
    let error = timeout(HANG, NatsEventLog::new(config))
        .await
        .expect("in time")
        .expect_err("no file");
    assert!(
        matches!(error, NatsError::CredentialsFile { .. }),
        "got {error:?}"
    );
    assert!(error.to_string().contains("auth.path"), "{error}");
}
