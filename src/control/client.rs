//! The clients: `agentsup status`, `restart` and `reload`.
//!
//! They find the config like every other command (`-c`, `$AGENTSUP_CONFIG`,
//! `./supervisor.toml`) but do not parse it: a config being edited while its
//! supervisor runs must not lock the user out of `status`. The socket is looked for
//! in every place the rules of [`super::path`] allow, not only the first, because
//! the client's environment may differ from the supervisor's (`XDG_RUNTIME_DIR` is
//! set in a login shell and unset under `docker exec`, cron or `sudo`).
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
use crate::output::stdout::{ReportFormat, write_stdout};
use crate::status::{ControlRequest, ControlResponse, Status};

/// `status` and `restart` are answered at once; a reload waits for every source to
/// be re-read (a `command` source may take its whole `timeout`).
const QUICK: Duration = Duration::from_secs(30);
const RELOAD: Duration = Duration::from_secs(300);

/// See [`super::cmd_status`].
pub(super) fn cmd_status(config: Option<&Path>, format: ReportFormat) -> Result<u8> {
    let r = ask(config, &ControlRequest::Status, QUICK)?;
    let status = r
        .status
        .ok_or_else(|| Error::Runtime("the supervisor answered `status` without one".into()))?;
    let text = match format {
        ReportFormat::Text => render_table(&status),
        ReportFormat::Json => {
            let v = wire::status_to_json(&status);
            format!(
                "{}\n",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
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
    write_stdout(&format!("{}\n", r.message))?;
    Ok(code::OK)
}

/// See [`super::cmd_reload`].
pub(super) fn cmd_reload(config: Option<&Path>) -> Result<u8> {
    let r = ask(config, &ControlRequest::Reload, RELOAD)?;
    write_stdout(&format!("{}\n", r.message))?;
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
        Err(Error::Runtime(r.message))
    }
}

/// Connects to the first place holding a live socket for `canonical`.
fn connect(canonical: &Path) -> Result<(UnixStream, PathBuf)> {
    let uid = path::euid();
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR");
    let candidates = path::candidates(canonical, runtime_dir.as_deref(), uid);
    let mut stale = None;
    for c in &candidates {
        let is_socket = std::fs::symlink_metadata(&c.socket)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        match UnixStream::connect(&c.socket) {
            Ok(s) => return Ok((s, c.socket.clone())),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(Error::Runtime(format!(
                    "cannot connect to the control socket {} of {}: permission denied; it belongs to the user running that supervisor (run this command as that user)",
                    c.socket.display(),
                    canonical.display()
                )));
            }
            Err(e) => stale = stale.or(Some((c.socket.clone(), e))),
        }
    }
    let config = canonical.display();
    let hint = format!(
        "  hint: `agentsup run -c {config}` starts one; status, restart and reload talk to a running supervisor"
    );
    if let Some((socket, e)) = stale {
        return Err(Error::Runtime(format!(
            "no agentsup run is serving {config}: its control socket {} is left over from a run that ended without cleaning up (killed?): {e}\n{hint}",
            socket.display()
        )));
    }
    // Name the place the supervisor would use; the others were looked at too.
    let primary = super::socket_path(canonical);
    Err(Error::Runtime(format!(
        "no agentsup run is serving {config}: there is no control socket at {}\n{hint}",
        primary.display()
    )))
}

/// One request, one answer line.
fn exchange(
    mut stream: UnixStream,
    socket: &Path,
    req: &ControlRequest,
    patience: Duration,
) -> Result<ControlResponse> {
    let io = |e: std::io::Error| {
        if e.kind() == ErrorKind::ConnectionReset {
            Error::Runtime(format!(
                "the supervisor closed {} without answering (is it exiting?)",
                socket.display()
            ))
        } else if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            Error::Runtime(format!(
                "no answer on {} within {}s; the supervisor may be stuck (the request may still be carried out)",
                socket.display(),
                patience.as_secs()
            ))
        } else {
            Error::Runtime(format!("control socket {}: {e}", socket.display()))
        }
    };
    stream.set_read_timeout(Some(patience)).map_err(io)?;
    stream.set_write_timeout(Some(QUICK)).map_err(io)?;
    let mut line = serde_json::to_string(req)
        .map_err(|e| Error::Runtime(format!("cannot encode the request: {e}")))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream.take(MAX_RESPONSE))
        .read_line(&mut answer)
        .map_err(io)?;
    if answer.trim().is_empty() {
        return Err(Error::Runtime(format!(
            "the supervisor closed {} without answering (is it shutting down?)",
            socket.display()
        )));
    }
    wire::decode_response(answer.trim_end()).map_err(|e| {
        Error::Runtime(format!(
            "cannot understand the answer on {} ({e}); is the supervisor a different agentsup version?",
            socket.display()
        ))
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
            r.state.clone(),
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
                    state: "running".into(),
                    uptime_secs: Some(5.0),
                    restarts: 0,
                    last_exit: None,
                },
                ReplicaStatus {
                    worker: "x".into(),
                    replica: 1,
                    pid: None,
                    state: "auth-blocked".into(),
                    uptime_secs: None,
                    restarts: 12,
                    last_exit: Some("auth".into()),
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
