//! Watching file and `dir` sources (SPEC 5): placeholder until the watch work lands.
use std::path::PathBuf;

use tokio::sync::mpsc;

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchGuard;

/// Watches `paths` (files and directories of the sources) and sends `()` on `tx`
/// once per debounced burst of changes.
pub fn start(paths: Vec<PathBuf>, tx: mpsc::UnboundedSender<()>) -> Result<WatchGuard, String> {
    let _ = (paths, tx);
    Ok(WatchGuard)
}
