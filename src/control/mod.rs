//! The control socket (SPEC 8): how `agentsup status`, `restart` and `reload` talk
//! to a running `agentsup run` of the same config.
//!
//! - Where: [`socket_path`]; the rules are in the `path` module's docs
//!   (`$XDG_RUNTIME_DIR/agentsup/`, else beside the config when no other user can
//!   write its directory, else `/run/user/<uid>/agentsup/`, else
//!   `/tmp/agentsup-<uid>/`). The socket is `0600`, its directory never one other
//!   users can write.
//! - Who: only our own uid (or root), and never a process running under agentsup
//!   (a worker): see the `server` module. Clients talk only to a socket file they
//!   own served by their uid or root, and escape what they print from it.
//! - Protocol: one JSON request per line, one JSON answer per line (see the `wire`
//!   module): `{"cmd":"status"}`, `{"cmd":"restart","target":"NAME[.N]"}`,
//!   `{"cmd":"reload"}` → `{"ok":…,"message":…,"status":…}`. Requests longer than
//!   64 KiB and malformed JSON get an `ok: false` answer, never a panic.
//! - One supervisor per config: [`bind`] takes the config's lock at every usable
//!   place (never in a directory another user controls; see the `lock` module),
//!   probes every candidate socket, refuses while another run of the same config
//!   is alive (naming its pid and the socket), and replaces the socket left by a
//!   run that was killed.
//! - `status` is answered from the last published [`Status`] snapshot; `restart`
//!   and `reload` go to the dispatcher, which answers through a oneshot.

mod client;
mod conns;
mod lock;
mod path;
mod server;
pub(crate) mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::status::{ControlRequest, ControlResponse, Status};

pub(crate) use server::ControlListener;

/// Where the control socket of the supervisor running `config` lives (or would):
/// the first usable place by the rules above, decided without changing anything on
/// disk. Every spelling of one config file (relative, absolute, through a symlink)
/// gives the same answer.
pub(crate) fn socket_path(config: &Path) -> PathBuf {
    let canonical = path::canonical_config(config);
    let uid = path::euid();
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR");
    let candidates = path::candidates(&canonical, runtime_dir.as_deref(), uid);
    candidates
        .iter()
        .find(|c| path::check(c, uid, false).is_ok())
        .or(candidates.last())
        .map(|c| c.socket.clone())
        .unwrap_or_default()
}

/// Binds the control socket of `config`, before anything starts; refuses (with the
/// running supervisor's pid and the socket path) when another `agentsup run` serves
/// this config, and replaces a stale socket left by a run that was killed.
pub(crate) async fn bind(config: &Path) -> Result<ControlListener, String> {
    server::bind(config).await
}

/// Serves control requests until the process ends: an accept task, one task per
/// connection. `Status` is answered from `status`; `Restart` and `Reload` are sent
/// on `requests` with a oneshot for the dispatcher's answer. Must be called inside
/// the tokio runtime.
pub(crate) fn serve(
    listener: ControlListener,
    status: watch::Receiver<Arc<Status>>,
    requests: mpsc::UnboundedSender<(ControlRequest, oneshot::Sender<ControlResponse>)>,
) {
    server::serve(listener, status, requests);
}

/// `agentsup status`: an aligned table of every replica (worker, replica, pid,
/// state, uptime, restarts, last exit class), or the [`Status`] JSON with
/// `--format json`. Exit 0; 1 when no supervisor runs for the config.
pub(crate) fn cmd_status(
    config: Option<&std::path::Path>,
    format: crate::output::stdout::ReportFormat,
) -> crate::exit::Result<u8> {
    client::cmd_status(config, format)
}

/// `agentsup restart NAME[.N]`: prints the supervisor's answer. Exit 0 when
/// accepted, 1 when refused (unknown worker, shutting down) or when no supervisor
/// runs for the config.
pub(crate) fn cmd_restart(
    config: Option<&std::path::Path>,
    target: &str,
) -> crate::exit::Result<u8> {
    client::cmd_restart(config, target)
}

/// `agentsup reload`: re-read and re-check the sources, restart what changed.
/// Exit 0 when the new values were adopted, 1 when they fail the checks (the
/// reason is printed; the old workers keep running) or no supervisor runs.
pub(crate) fn cmd_reload(config: Option<&std::path::Path>) -> crate::exit::Result<u8> {
    client::cmd_reload(config)
}
