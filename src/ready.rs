//! Per-worker readiness (issue 14): `ready = { http = URL } | { exec = [...] } |
//! { log = "regex" } | { notify = true }`. A replica with a probe counts as ready
//! only once the probe succeeded for its current run; rolling restarts and
//! rotations move to the next replica only then (or after `timeout`), `/readyz`
//! and agentsup's own systemd `READY=1` wait for it.
//!
//! The probe runs from the start of each run until its first success: it is a
//! startup/readiness check, not a liveness check.
//!
//! - `http`: `GET URL` every `interval`; any 2xx is ready. `{replica}` in the URL is
//!   replaced by the replica's index (one port per replica: `http://127.0.0.1:80{replica}/`).
//! - `exec`: runs the argv every `interval` (no shell, in the worker's `cwd`), with
//!   the `[env] inherit` set plus `AGENTSUP_WORKER`, `AGENTSUP_REPLICA`,
//!   `AGENTSUP_REPLICAS` and `AGENTSUP_PID` — never the worker's keys; exit 0 is ready.
//! - `log`: a line of the worker's stdout or stderr matches the regex.
//! - `notify`: the worker sends `READY=1` to `$NOTIFY_SOCKET` (systemd's protocol;
//!   `sd_notify(3)`, Python's `sdnotify`, `systemd-notify --ready`): one datagram
//!   socket per run, in a private directory.

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

/// Default time a replica may take to become ready before a rolling restart moves
/// on without it.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default pause between two `http` / `exec` attempts.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// What tells that a replica is ready.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `GET` answers 2xx.
    Http(String),
    /// The command exits 0.
    Exec(Vec<String>),
    /// An output line matches.
    Log(Regex),
    /// `READY=1` on `$NOTIFY_SOCKET`.
    Notify,
}

/// A worker's `ready`, checked.
#[derive(Debug, Clone)]
pub struct ReadyPlan {
    /// The probe.
    pub probe: Probe,
    /// How long a rolling restart waits for it.
    pub timeout: Duration,
    /// Pause between `http` / `exec` attempts.
    pub interval: Duration,
}

impl ReadyPlan {
    /// `http GET URL`, `exec cmd`, `log /re/`, `notify`: for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.probe {
            Probe::Http(u) => format!("http {u}"),
            Probe::Exec(argv) => format!("exec `{}`", argv.first().map_or("", String::as_str)),
            Probe::Log(re) => format!("log /{}/", re.as_str()),
            Probe::Notify => "notify".to_string(),
        }
    }
}

/// `{replica}` replaced by the replica's index.
pub(crate) fn for_replica(text: &str, replica: u32) -> String {
    text.replace("{replica}", &replica.to_string())
}

/// Checks a `http` probe's URL: plain `http://` (a readiness endpoint is local),
/// with a host. The error is a sentence fragment.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    // Checked first, and the URL is not echoed: it would print the password,
    // here and in every "not ready" warning after.
    if crate::redact::url_password(url).is_some() {
        return Err(
            "carries a password (`user:password@` or a `password=` parameter); a readiness probe sends no credentials: remove it"
                .to_string(),
        );
    }
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?} must start with http:// (e.g. \"http://127.0.0.1:8000/healthz\")")
    })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// One `http` attempt: `Ok` on a 2xx answer within `timeout`, else why not. Blocking (ureq);
/// call it off the async threads.
pub(crate) fn http_once(url: &str, timeout: Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        // A readiness endpoint is local: never through agentsup's HTTP(S)_PROXY.
        .proxy(None)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("it answered HTTP {}", r.status().as_u16())),
        // ureq's message names the failure (connection refused, timeout); the URL
        // is the configured one, which carries no password (`check_url`).
        Err(e) => Err(e.to_string()),
    }
}

/// The parsed lines of one `$NOTIFY_SOCKET` datagram: true when it says
/// `READY=1`.
pub(crate) fn says_ready(datagram: &[u8]) -> bool {
    datagram
        .split(|&b| b == b'\n')
        .any(|line| line == b"READY=1")
}

/// A private directory for this run's notify sockets (`notify = true`): 0700
/// (0711 when a worker runs as another user, who must reach its own socket), on
/// `$XDG_RUNTIME_DIR` when it is ours, else the temp directory. Removed on drop.
#[derive(Debug)]
pub(crate) struct NotifyDir {
    root: PathBuf,
}

impl NotifyDir {
    /// Creates it under `$XDG_RUNTIME_DIR` or the temp directory.
    pub(crate) fn create(foreign: bool) -> Result<NotifyDir, String> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let me = nix::unistd::geteuid().as_raw();
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|x| {
                !foreign
                    && x.is_absolute()
                    && std::fs::symlink_metadata(x).is_ok_and(|m| m.is_dir() && m.uid() == me)
            })
            .unwrap_or_else(std::env::temp_dir);
        for _ in 0..8 {
            // Short: a socket path must fit in 108 bytes.
            let root = base.join(format!("agentsup-n-{:08x}", fastrand::u32(..)));
            match std::fs::DirBuilder::new().mode(0o700).create(&root) {
                Ok(()) => {
                    if foreign {
                        let _ =
                            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711));
                    }
                    return Ok(NotifyDir { root });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot create a directory for ready = {{ notify = true }} sockets in {}: {e}",
                        base.display()
                    ));
                }
            }
        }
        Err(format!(
            "cannot create a directory for notify sockets in {}",
            base.display()
        ))
    }

    /// The directory itself.
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The socket path of one run of one replica slot.
    pub(crate) fn socket_path(&self, slot: usize, run: u64) -> PathBuf {
        self.root.join(format!("{slot}.{run}"))
    }
}

impl Drop for NotifyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_datagrams_are_read_line_by_line() {
        assert!(says_ready(b"READY=1"));
        assert!(says_ready(b"STATUS=warming up\nREADY=1\n"));
        assert!(!says_ready(b"READY=0\nSTATUS=READY=1 soon"));
    }

    #[test]
    fn urls_are_plain_http_with_a_host_and_take_the_replica() {
        assert!(check_url("http://127.0.0.1:8000/healthz").is_ok());
        assert!(check_url("https://x/").unwrap_err().contains("http://"));
        assert!(check_url("http:///x").unwrap_err().contains("no host"));
        let e = check_url("http://app:s3cr3t-pw@127.0.0.1/ready").unwrap_err();
        assert!(
            e.contains("carries a password") && !e.contains("s3cr3t"),
            "{e}"
        );
        let e = check_url("https://app:s3cr3t-pw@x/").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert_eq!(
            for_replica("http://127.0.0.1:80{replica}/", 3),
            "http://127.0.0.1:803/"
        );
    }

    #[test]
    fn an_http_probe_wants_a_2xx() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        let url = format!("http://127.0.0.1:{port}/ready");
        assert_eq!(
            http_once(&url, Duration::from_secs(5)),
            Err("it answered HTTP 503".to_string())
        );
        assert_eq!(http_once(&url, Duration::from_secs(5)), Ok(()));
        server.join().unwrap();
    }
}
