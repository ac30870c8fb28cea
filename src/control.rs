//! The control socket (SPEC 8): placeholder until the control work lands.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::status::{ControlRequest, ControlResponse, Status};

/// Where the control socket of the supervisor running `config` lives.
pub fn socket_path(config: &Path) -> PathBuf {
    config.with_extension("sock")
}

/// The bound control socket of a running supervisor.
pub struct ControlListener;

/// Binds the control socket; refuses when another `agentsup run` serves this config.
pub async fn bind(config: &Path) -> Result<ControlListener, String> {
    let _ = config;
    Ok(ControlListener)
}

/// Serves control requests until the process ends.
pub fn serve(
    listener: ControlListener,
    status: watch::Receiver<Arc<Status>>,
    requests: mpsc::UnboundedSender<(ControlRequest, oneshot::Sender<ControlResponse>)>,
) {
    let _ = (listener, status, requests);
}

/// `agentsup status`.
pub fn cmd_status(a: crate::cli::StatusArgs) -> crate::exit::Result<u8> {
    let _ = a;
    Err(crate::exit::Error::Runtime(
        "status: not available yet".into(),
    ))
}

/// `agentsup restart`.
pub fn cmd_restart(a: crate::cli::RestartArgs) -> crate::exit::Result<u8> {
    let _ = a;
    Err(crate::exit::Error::Runtime(
        "restart: not available yet".into(),
    ))
}

/// `agentsup reload`.
pub fn cmd_reload(a: crate::cli::ReloadArgs) -> crate::exit::Result<u8> {
    let _ = a;
    Err(crate::exit::Error::Runtime(
        "reload: not available yet".into(),
    ))
}
