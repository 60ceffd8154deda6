//! The demo binary, run as a newcomer runs it: a wrong read-model row is
//! reported whatever the counter's value, and arguments too large to count
//! are refused with a message. (That a second run continues from the first
//! is checked by the unit tests in `src/main.rs`.)

use std::{path::Path, process::Command};

/// Runs the demo in `dir` with `args`; returns (success, stdout + stderr).
fn demo(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_counter"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the demo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn a_wrong_total_for_a_counter_at_zero_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, first) = demo(dir.path(), &["--counters", "3", "--commands", "5"]);
    assert!(ok, "{first}");

    // A counter that was never sent a command has the value 0; a row of the
    // read model claiming otherwise must not pass unnoticed.
    let db = dir.path().join("counter.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO counter_totals (id, value, events) VALUES ('counter-3', 999, 1)",
        [],
    )
    .unwrap();
    drop(conn);
    let (ok, third) = demo(dir.path(), &["--counters", "4", "--commands", "0"]);
    assert!(
        !ok,
        "a wrong total for a counter at 0 was not caught:\n{third}"
    );
    assert!(third.contains("1 totals differ"), "{third}");
}

#[test]
fn more_commands_than_a_u64_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = demo(
        dir.path(),
        &[
            "--backend",
            "memory",
            "--counters",
            "4",
            "--commands",
            "4611686018427387904",
        ],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("more commands than a u64 counts"), "{text}");
}
