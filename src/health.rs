//! HTTP health and metrics endpoints (SPEC 8): placeholder until the health work lands.
use std::sync::Arc;

use tokio::sync::watch;

use crate::status::Status;

/// Binds the health address before any worker starts, so a port clash is a
/// start-up error rather than a half-started supervisor.
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `/healthz`, `/readyz` and `/metrics` from `status` until the process ends.
pub fn serve(listener: tokio::net::TcpListener, status: watch::Receiver<Arc<Status>>) {
    let _ = (listener, status);
}
