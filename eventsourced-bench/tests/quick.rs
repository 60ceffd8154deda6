//! The smoke run CI can afford: every memory workload at a tenth of its size,
//! checking that the program verifies its results, exits 0, and prints one
//! parseable JSON object per result line. Timing is not checked.

use serde_json::Value;
use std::{
    io::Read,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// Runs the bench with `args`, killing it after two minutes.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventsourced-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the bench binary starts");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        stdout.read_to_end(&mut text).map(|_| text)
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        stderr.read_to_end(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the bench works") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the bench did not finish within 120 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().expect("reader").expect("stdout reads"),
        stderr: err_reader.join().expect("reader").expect("stderr reads"),
    }
}

#[test]
fn quick_memory_run_verifies_and_prints_json_per_result() {
    let output = run(&[
        "--backend",
        "memory",
        "--workload",
        "all",
        "--quick",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the bench failed ({}):\n{stderr}",
        output.status
    );

    let records: Vec<Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not a JSON line: {line:?}: {error}"))
        })
        .collect();
    let workloads: Vec<&str> = records
        .iter()
        .map(|r| r["workload"].as_str().expect("workload is a string"))
        .collect();
    assert_eq!(
        workloads,
        [
            "idle 10000",
            "log append 1-event",
            "seq 1x200",
            "seq 10x100",
            "seq 100x20",
            "hot 64 senders",
            "recovery 100x20",
            "recovery 100x20 snap/6",
            "recovery 1x10000",
            "recovery 1x10000 snap/102",
        ],
        "stderr:\n{stderr}"
    );
    for record in &records {
        assert_eq!(record["backend"], "memory");
        for field in [
            "commands",
            "seconds",
            "commands_per_s",
            "p50_us",
            "p99_us",
            "recovery_ms",
            "events_per_s",
            "peak_rss_kib",
        ] {
            assert!(record.get(field).is_some(), "{field} missing in {record}");
        }
        assert!(
            record["commands"].as_u64().is_some_and(|n| n > 0),
            "{record}"
        );
    }
    let seq = &records[2];
    assert_eq!(seq["commands"], 200);
    assert!(seq["commands_per_s"].as_f64().is_some_and(|r| r > 0.0));
    assert!(seq["p99_us"].as_u64() >= seq["p50_us"].as_u64());
    let recovery = &records[6];
    assert!(recovery["recovery_ms"].as_f64().is_some());
    assert!(recovery["events_per_s"].as_f64().is_some());
    assert!(
        records[0]["rss_bytes_per_entity"]
            .as_f64()
            .is_some_and(|b| b > 0.0)
    );
    // Idle ran in a process of its own: the heap its entities left behind
    // does not count toward the later runs' peaks.
    let peak = |record: &Value| record["peak_rss_kib"].as_u64().expect("a peak");
    assert!(
        records[1..]
            .iter()
            .all(|record| peak(record) < peak(&records[0])),
        "every later run's peak is below idle's {} KiB: {:?}",
        peak(&records[0]),
        records
            .iter()
            .map(|r| (&r["workload"], peak(r)))
            .collect::<Vec<_>>()
    );
}

/// With `--json` the lines are the results: if they cannot be written (here a
/// full disk), the run fails instead of exiting 0 with nothing recorded. So
/// does the table without `--json`.
#[test]
fn results_that_cannot_be_written_fail_the_run() {
    for json in [true, false] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full opens");
        let mut args = vec!["--backend", "memory", "--workload", "seq", "--quick"];
        if json {
            args.push("--json");
        }
        let output = Command::new(env!("CARGO_BIN_EXE_eventsourced-bench"))
            .args(&args)
            .stdout(Stdio::from(full))
            .stderr(Stdio::piped())
            .output()
            .expect("the bench runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?} with stdout on a full disk:\n{stderr}"
        );
        assert!(stderr.contains("cannot write"), "{stderr}");
    }
}

#[test]
fn a_verification_mismatch_fails_the_run() {
    let output = run(&[
        "--backend",
        "memory",
        "--workload",
        "seq",
        "--quick",
        "--json",
        "--sabotage-verification",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the run passed:\n{stderr}");
    assert!(
        stderr.contains("verification failed: entity seq-0 has 200 events in the log, but 201 commands were acknowledged"),
        "{stderr}"
    );
    // A failed workload prints no result line.
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 0);
}

#[test]
fn a_missing_nats_server_is_explained() {
    let output = Command::new(env!("CARGO_BIN_EXE_eventsourced-bench"))
        .args(["--backend", "nats", "--workload", "raw", "--quick"])
        .env_remove("NATS_URL")
        .env("NATS_SERVER_BIN", "/nonexistent/nats-server")
        .env("PATH", "/nonexistent")
        .output()
        .expect("the bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("set NATS_URL"), "{stderr}");
}

#[test]
fn several_runs_print_every_run_and_tabulate_the_medians() {
    let output = run(&[
        "--backend",
        "memory",
        "--workload",
        "seq",
        "--quick",
        "--json",
        "--runs",
        "3",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the bench failed:\n{stderr}");
    let runs: Vec<(String, u64)> = stdout
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON line");
            let workload = record["workload"].as_str().expect("workload").to_owned();
            (workload, record["run"].as_u64().expect("run is a number"))
        })
        .collect();
    let expected: Vec<(String, u64)> = (1..=3)
        .flat_map(|run| ["seq 1x200", "seq 10x100", "seq 100x20"].map(|w| (w.to_owned(), run)))
        .collect();
    assert_eq!(runs, expected);
    // The table (on stderr with --json) has one line per workload, the median.
    let table_rows: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("| memory"))
        .collect();
    assert_eq!(table_rows.len(), 3, "{stderr}");
    for row in table_rows {
        assert!(row.contains("median of 3 runs, range "), "{row}");
    }
}

#[test]
fn zero_runs_are_refused() {
    let output = run(&["--backend", "memory", "--runs", "0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--runs"), "{stderr}");
}

#[test]
fn raw_ceilings_read_back_what_they_wrote_on_every_server() {
    // Needs PostgreSQL (DATABASE_URL) and starts its own NATS server unless
    // NATS_URL is set, like the rest of the workspace's server tests.
    let output = run(&["--backend", "all", "--workload", "raw", "--quick", "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the bench failed:\n{stderr}");
    let reads: Vec<(String, String, f64)> = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|record| {
            record["workload"]
                .as_str()
                .is_some_and(|w| w.starts_with("raw read"))
        })
        .map(|record| {
            (
                record["backend"].as_str().expect("backend").to_owned(),
                record["workload"].as_str().expect("workload").to_owned(),
                record["events_per_s"].as_f64().expect("events/s of a read"),
            )
        })
        .collect();
    let names: Vec<(&str, &str)> = reads
        .iter()
        .map(|(backend, workload, _)| (backend.as_str(), workload.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("sqlite", "raw read 100x20"),
            ("postgres", "raw read 100x20"),
            ("nats", "raw read 100x20 1 consumer"),
            ("nats", "raw read 100x20 per subject"),
        ],
        "{stderr}"
    );
    assert!(reads.iter().all(|(_, _, rate)| *rate > 0.0), "{reads:?}");
}
