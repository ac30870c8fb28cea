//! The clients: `agentsup status`, `restart` and `reload`.
//!
//! They find the config like every other command (`-c`, `$AGENTSUP_CONFIG`,
//! `./supervisor.toml`) but do not parse it: a config being edited while its
//! supervisor runs must not lock the user out of `status`. The socket is looked for
//! in every place the rules of [`super::path`] allow, not only the first, because
//! the client's environment may differ from the supervisor's (`XDG_RUNTIME_DIR` is
//! set in a login shell and unset under `docker exec`, cron or `sudo`).
//!
//! Trust: the client talks only to a socket file it owns, served by a process of
//! its own uid or root (`SO_PEERCRED`); a socket of another user found on the way
//! is skipped (and named if nothing else answers). Everything it prints that came
//! from the server is sanitised: control characters (C0, DEL, C1) and bidi
//! overrides are shown escaped (`\x1b`, `\u{202e}`), so a server, or a name in its
//! answer, cannot drive the terminal or forge a line.
//!
//! Exit codes: 0 done; 1 the supervisor refused the request, or no supervisor is
//! running for this config; 78 the config file was not found.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::path;
use super::wire::{self, MAX_RESPONSE};
use crate::exit::{Error, Result, code};

/// Why a client command could not get its answer. Shown as one message through
/// `main` (exit 1); whatever came from the server is sanitised first.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// The supervisor refused the request (unknown worker, shutting down).
    #[error("{}", sanitize(.0))]
    Refused(String),
    /// The answer to `status` had no status in it.
    #[error("the supervisor answered `status` without one")]
    NoStatus,
    /// The socket exists and is ours, but connecting was refused by permissions.
    #[error(
        "cannot connect to the control socket {} of {}: permission denied; it belongs to the user running that supervisor (run this command as that user)",
        socket.display(),
        config.display()
    )]
    PermissionDenied {
        /// The socket file.
        socket: PathBuf,
        /// The config it serves.
        config: PathBuf,
    },
    /// No supervisor serves this config: no socket, or only a stale one.
    #[error(
        "no agentsup run is serving {}: {}\n  hint: `agentsup run -c {}` starts one; status, restart and reload talk to a running supervisor{}",
        config.display(),
        match stale {
            Some((socket, e)) => format!(
                "its control socket {} is left over from a run that ended without cleaning up (killed?): {e}",
                socket.display()
            ),
            None => format!("there is no control socket at {}", primary.display()),
        },
        config.display(),
        if foreign.is_empty() {
            String::new()
        } else {
            format!(
                "\n  ignored (not yours, never talked to): {}; a supervisor of another user is reached only as that user",
                foreign.join(", ")
            )
        }
    )]
    NotRunning {
        /// The config (canonical).
        config: PathBuf,
        /// Where its supervisor would put the socket.
        primary: PathBuf,
        /// A socket file that no process serves, and what connecting said.
        stale: Option<(PathBuf, std::io::Error)>,
        /// Sockets of other users that were skipped, each with why.
        foreign: Vec<String>,
    },
    /// The supervisor closed the connection without an answer.
    #[error("the supervisor closed {} without answering (is it {}?)", socket.display(), if *reset { "exiting" } else { "shutting down" })]
    Closed {
        /// The socket.
        socket: PathBuf,
        /// The connection was reset (rather than closed in order).
        reset: bool,
    },
    /// No answer within the client's patience.
    #[error(
        "no answer on {} within {}s; the supervisor may be stuck (the request may still be carried out)",
        socket.display(),
        patience.as_secs()
    )]
    NoAnswer {
        /// The socket.
        socket: PathBuf,
        /// How long the client waited.
        patience: Duration,
    },
    /// Any other failure talking on the socket.
    #[error("control socket {}: {cause}", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    /// The request could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(serde_json::Error),
    /// The answer could not be decoded.
    #[error(
        "cannot understand the answer on {} ({}); is the supervisor a different agentsup version?",
        socket.display(),
        // serde quotes what it could not parse: never raw to a terminal.
        sanitize(detail)
    )]
    Undecodable {
        /// The socket.
        socket: PathBuf,
        /// What the decoder said.
        detail: String,
    },
}

impl From<ControlError> for Error {
    fn from(e: ControlError) -> Error {
        Error::Failed(Box::new(e))
    }
}
use crate::output::stdout::{ReportFormat, write_stdout};
use crate::status::{ControlRequest, ControlResponse, Status};

/// `status` and `restart` are answered at once; a reload waits for every source to
/// be re-read (a `command` source may take its whole `timeout`).
const QUICK: Duration = Duration::from_secs(30);
const RELOAD: Duration = Duration::from_secs(300);

/// See [`super::cmd_status`].
pub(super) fn cmd_status(config: Option<&Path>, format: ReportFormat) -> Result<u8> {
    let r = ask(config, &ControlRequest::Status, QUICK)?;
    let status = sanitize_status(r.status.ok_or(ControlError::NoStatus)?);
    let text = match format {
        ReportFormat::Text => render_table(&status),
        ReportFormat::Json => {
            // Every map key is a string: serialising cannot fail.
            format!(
                "{}\n",
                serde_json::to_string_pretty(&status).unwrap_or_default()
            )
        }
    };
    write_stdout(&text)?;
    Ok(code::OK)
}

/// See [`super::cmd_restart`].
pub(super) fn cmd_restart(config: Option<&Path>, target: &str) -> Result<u8> {
    let req = ControlRequest::Restart {
        target: target.to_string(),
    };
    let r = ask(config, &req, QUICK)?;
    write_stdout(&format!("{}\n", sanitize(&r.message)))?;
    Ok(code::OK)
}

/// See [`super::cmd_reload`].
pub(super) fn cmd_reload(config: Option<&Path>) -> Result<u8> {
    let r = ask(config, &ControlRequest::Reload, RELOAD)?;
    write_stdout(&format!("{}\n", sanitize(&r.message)))?;
    Ok(code::OK)
}

/// The config path, found like every other command finds it, unparsed.
fn config_path(flag: Option<&Path>) -> Result<PathBuf> {
    let env_value = std::env::var("AGENTSUP_CONFIG").ok();
    let (p, _) = crate::plan::locate(flag, env_value.as_deref());
    if p.is_file() {
        return Ok(p);
    }
    // Not there: let `load_located` word the error, with its hints about -c and
    // $AGENTSUP_CONFIG.
    crate::plan::load_located(flag).map(|plan| plan.config_path)
}

/// Sends one request and returns an accepted answer; a refusal is an error (exit 1)
/// carrying the supervisor's reason.
fn ask(flag: Option<&Path>, req: &ControlRequest, patience: Duration) -> Result<ControlResponse> {
    let config = config_path(flag)?;
    let canonical = path::canonical_config(&config);
    let (stream, socket) = connect(&canonical)?;
    let r = exchange(stream, &socket, req, patience)?;
    if r.ok {
        Ok(r)
    } else {
        Err(ControlError::Refused(r.message).into())
    }
}

/// Connects to the first place holding a live socket for `canonical` that we
/// trust: a socket file we own, served by our uid or root.
fn connect(canonical: &Path) -> Result<(UnixStream, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let uid = path::euid();
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR");
    let candidates = path::candidates(canonical, runtime_dir.as_deref(), uid);
    let mut stale = None;
    let mut foreign = Vec::new();
    for c in &candidates {
        let meta = match std::fs::symlink_metadata(&c.socket) {
            Ok(m) if m.file_type().is_socket() => m,
            _ => continue,
        };
        if meta.uid() != uid {
            foreign.push(format!(
                "{} (its file belongs to uid {})",
                c.socket.display(),
                meta.uid()
            ));
            continue;
        }
        match UnixStream::connect(&c.socket) {
            Ok(s) => match peer_uid(&s) {
                // The file may have been swapped between the look and the
                // connect: the server's own credentials decide.
                Some(p) if p == uid || p == 0 => return Ok((s, c.socket.clone())),
                p => foreign.push(format!(
                    "{} (served by uid {})",
                    c.socket.display(),
                    p.map_or_else(|| "unknown".to_string(), |p| p.to_string())
                )),
            },
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(ControlError::PermissionDenied {
                    socket: c.socket.clone(),
                    config: canonical.to_path_buf(),
                }
                .into());
            }
            Err(e) => stale = stale.or(Some((c.socket.clone(), e))),
        }
    }
    // Name the place the supervisor would use; the others were looked at too.
    Err(ControlError::NotRunning {
        config: canonical.to_path_buf(),
        primary: super::socket_path(canonical),
        stale,
        foreign,
    }
    .into())
}

/// The uid of the process serving `s` (`SO_PEERCRED`).
fn peer_uid(s: &UnixStream) -> Option<u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(s, PeerCredentials).ok().map(|c| c.uid())
}

/// `text` with every character a terminal would act on shown escaped: C0
/// controls (newline and tab too: one answer is one line), DEL, C1 controls and
/// the bidi overrides that reorder what is shown.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\u{0}'..='\u{1f}' | '\u{7f}' => out.push_str(&format!("\\x{:02x}", ch as u32)),
            '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\u{{{:x}}}", ch as u32));
            }
            _ => out.push(ch),
        }
    }
    out
}

/// Every string of a [`Status`] through [`sanitize`], for the table and the JSON
/// alike (`jq -r` would turn an escaped `\u001b` back into ESC).
fn sanitize_status(mut s: Status) -> Status {
    s.config = sanitize(&s.config);
    for r in &mut s.replicas {
        r.worker = sanitize(&r.worker);
        r.last_exit = r.last_exit.as_deref().map(sanitize);
    }
    s.counters.restarts = std::mem::take(&mut s.counters.restarts)
        .into_iter()
        .map(|(w, by_reason)| (sanitize(&w), by_reason))
        .collect();
    s.counters.auth_failures = std::mem::take(&mut s.counters.auth_failures)
        .into_iter()
        .map(|(w, n)| (sanitize(&w), n))
        .collect();
    s
}

/// One request, one answer line.
fn exchange(
    mut stream: UnixStream,
    socket: &Path,
    req: &ControlRequest,
    patience: Duration,
) -> Result<ControlResponse> {
    let io = |cause: std::io::Error| -> Error {
        let socket = socket.to_path_buf();
        match cause.kind() {
            ErrorKind::ConnectionReset => ControlError::Closed {
                socket,
                reset: true,
            },
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                ControlError::NoAnswer { socket, patience }
            }
            _ => ControlError::Io { socket, cause },
        }
        .into()
    };
    stream.set_read_timeout(Some(patience)).map_err(io)?;
    stream.set_write_timeout(Some(QUICK)).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(ControlError::Encode)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream.take(MAX_RESPONSE))
        .read_line(&mut answer)
        .map_err(io)?;
    if answer.trim().is_empty() {
        return Err(ControlError::Closed {
            socket: socket.to_path_buf(),
            reset: false,
        }
        .into());
    }
    wire::decode_response(answer.trim_end()).map_err(|detail| {
        ControlError::Undecodable {
            socket: socket.to_path_buf(),
            detail,
        }
        .into()
    })
}

/// `1d02h`, `3h04m`, `2m05s`, `42s`: two units are enough to read at a glance.
pub(crate) fn humanize(secs: f64) -> String {
    // `as` saturates: NaN and negatives become 0.
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The aligned table of `agentsup status`, under a one-line summary.
pub(crate) fn render_table(s: &Status) -> String {
    let mut out = format!(
        "agentsup pid {} supervising {}, up {}{}\n",
        s.pid,
        s.config,
        humanize(s.uptime_secs),
        if s.shutting_down {
            ", shutting down"
        } else {
            ""
        }
    );
    let dash = || "-".to_string();
    let mut rows: Vec<[String; 7]> = vec![[
        "WORKER".into(),
        "REPLICA".into(),
        "PID".into(),
        "STATE".into(),
        "UPTIME".into(),
        "RESTARTS".into(),
        "LAST EXIT".into(),
    ]];
    for r in &s.replicas {
        rows.push([
            r.worker.clone(),
            r.replica.to_string(),
            r.pid.map(|p| p.to_string()).unwrap_or_else(dash),
            r.state.to_string(),
            r.uptime_secs.map(humanize).unwrap_or_else(dash),
            r.restarts.to_string(),
            r.last_exit.clone().unwrap_or_else(dash),
        ]);
    }
    if s.replicas.is_empty() {
        out.push_str("no replicas yet (starting)\n");
        return out;
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ReplicaStatus;

    #[test]
    fn what_the_server_sends_cannot_drive_the_terminal() {
        assert_eq!(sanitize("plain: ok, ü"), "plain: ok, ü");
        assert_eq!(
            sanitize("\u{1b}]0;pwned\u{7}\rx\nagentsup | y\u{0}\u{7f}"),
            "\\x1b]0;pwned\\x07\\x0dx\\x0aagentsup | y\\x00\\x7f"
        );
        assert_eq!(sanitize("\u{9b}31m \u{202e}abc"), "\\u{9b}31m \\u{202e}abc");
        let mut s = Status {
            config: "/srv/\u{1b}[2J.toml".into(),
            replicas: vec![ReplicaStatus {
                worker: "w\u{8}".into(),
                replica: 0,
                pid: None,
                state: crate::replica::StateKind::Running,
                uptime_secs: None,
                restarts: 0,
                last_exit: Some("\u{1b}c".into()),
                ready: None,
            }],
            ..Status::default()
        };
        s.counters.auth_failures.insert("w\u{1b}".into(), 1);
        let json = serde_json::to_string(&sanitize_status(s)).unwrap();
        assert!(!json.contains("\\u001b") && !json.contains("\\b"), "{json}");
        assert!(json.contains(r"\\x1b[2J"), "{json}");
    }

    #[test]
    fn uptimes_read_at_a_glance() {
        assert_eq!(humanize(0.4), "0s");
        assert_eq!(humanize(59.9), "59s");
        assert_eq!(humanize(125.0), "2m05s");
        assert_eq!(humanize(f64::from(3 * 3600 + 4 * 60 + 5)), "3h04m");
        assert_eq!(humanize(f64::from(2 * 86400 + 3 * 3600)), "2d03h");
        assert_eq!(humanize(f64::NAN), "0s");
    }

    #[test]
    fn table_is_aligned_with_dashes_for_nothing() {
        let s = Status {
            config: "/srv/supervisor.toml".into(),
            pid: 10,
            uptime_secs: 61.0,
            replicas: vec![
                ReplicaStatus {
                    worker: "planner".into(),
                    replica: 0,
                    pid: Some(1234),
                    state: crate::replica::StateKind::Running,
                    uptime_secs: Some(5.0),
                    restarts: 0,
                    last_exit: None,
                    ready: None,
                },
                ReplicaStatus {
                    worker: "x".into(),
                    replica: 1,
                    pid: None,
                    state: crate::replica::StateKind::AuthBlocked,
                    uptime_secs: None,
                    restarts: 12,
                    last_exit: Some("auth".into()),
                    ready: None,
                },
            ],
            ..Status::default()
        };
        let t = render_table(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "agentsup pid 10 supervising /srv/supervisor.toml, up 1m01s"
        );
        assert_eq!(
            lines[1],
            "WORKER   REPLICA  PID   STATE         UPTIME  RESTARTS  LAST EXIT"
        );
        assert_eq!(
            lines[2],
            "planner  0        1234  running       5s      0         -"
        );
        assert_eq!(
            lines[3],
            "x        1        -     auth-blocked  -       12        auth"
        );
    }
}
