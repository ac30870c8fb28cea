//! HTTP health and metrics endpoints (SPEC 8): `GET /healthz`, `/readyz`, `/metrics`.
//!
//! A small hyper 1.x HTTP/1 server, no framework: one accept loop and one task per
//! connection on the supervisor's runtime. Every answer is computed from the latest
//! [`Status`] snapshot on the `watch` channel the dispatcher publishes to, so a
//! request never touches — let alone waits for — the dispatcher, and a slow or
//! stuck client only holds its own task.
//!
//! - `/healthz`: 200 `ok` while the process serves at all (liveness).
//! - `/readyz`: 200 when [`Status::readiness`] is Ok, else 503 with the reason
//!   (worker and replica names and states, never a value).
//! - `/metrics`: see [`metrics`] for the families and the format negotiation.
//! - Other paths 404; methods other than GET (and HEAD, which every HTTP server
//!   must support, RFC 9110 9.1) 405 with `Allow`.

mod metrics;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::status::Status;

use metrics::Format;

/// At most this many connections are served at once; more are closed on accept.
/// Probes and scrapers use one or two; the cap keeps a misbehaving client from
/// growing the supervisor's memory without bound.
const MAX_CONNECTIONS: usize = 64;

/// A client must send its request head within this time, or its connection is
/// closed (hyper's slow-loris guard; its default is 30 s).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the health address before any worker starts, so a port clash is a
/// start-up error rather than a half-started supervisor.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/healthz`, `/readyz` and `/metrics` from `status` until the process ends.
///
/// Must be called from within the tokio runtime; returns at once (the server runs
/// on spawned tasks).
pub fn serve(listener: TcpListener, status: watch::Receiver<Arc<Status>>) {
    let shared = Arc::new(Shared {
        status,
        serving_since: Instant::now(),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: the condition persists for a while, so
                    // pause instead of spinning (and logging) in a tight loop.
                    tracing::warn!("health endpoint: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let response = shared.respond(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                // Errors here are the client's (reset, timeout, bad request): they
                // end that connection and nothing else.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// What every connection task reads.
struct Shared {
    status: watch::Receiver<Arc<Status>>,
    /// `serve` runs just before the dispatcher starts; see [`Shared::uptime`].
    serving_since: Instant,
}

impl Shared {
    /// The latest snapshot. The `watch` read lock is held only for the `Arc` clone,
    /// so the dispatcher's `send_replace` never waits on a request being rendered.
    fn snapshot(&self) -> Arc<Status> {
        self.status.borrow().clone()
    }

    /// Seconds since supervision began. The snapshot's own `uptime_secs` is stamped
    /// when it was published, so it freezes while nothing happens; the time since
    /// `serve` keeps counting and starts within a moment of the dispatcher's clock.
    fn uptime(&self, status: &Status) -> f64 {
        status
            .uptime_secs
            .max(self.serving_since.elapsed().as_secs_f64())
    }

    fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let known = matches!(path, "/healthz" | "/readyz" | "/metrics");
        if !known {
            return text(
                StatusCode::NOT_FOUND,
                "not found; try /healthz, /readyz or /metrics\n",
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; use GET\n",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match readiness(&self.snapshot()) {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            _ => {
                let status = self.snapshot();
                let format =
                    Format::negotiate(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
                let body = metrics::render(
                    &status,
                    self.uptime(&status),
                    readiness(&status).is_ok(),
                    format,
                );
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                r
            }
        }
    }
}

/// [`Status::readiness`], plus one case it cannot see: before the dispatcher's
/// first publish the channel holds `Status::default()`, which has no workers and
/// would pass vacuously. `agentsup run` always has at least one worker, so no
/// replicas means "not started yet".
pub fn readiness(status: &Status) -> Result<(), String> {
    if status.replicas.is_empty() && !status.shutting_down {
        return Err("starting".into());
    }
    status.readiness()
}

/// A plain-text response that no cache keeps (probes must see the current state).
fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ReplicaStatus;

    fn shared(status: Status) -> (watch::Sender<Arc<Status>>, Shared) {
        let (tx, rx) = watch::channel(Arc::new(status));
        (
            tx,
            Shared {
                status: rx,
                serving_since: Instant::now(),
            },
        )
    }

    fn get(s: &Shared, method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request");
        let r = s.respond(&req);
        let code = r.status();
        let body = futures_body(r);
        (code, body)
    }

    fn futures_body(r: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bytes = rt
            .block_on(r.into_body().collect())
            .expect("infallible")
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn running(worker: &str) -> ReplicaStatus {
        ReplicaStatus {
            worker: worker.into(),
            replica: 0,
            pid: Some(42),
            state: "running".into(),
            uptime_secs: Some(1.0),
            restarts: 0,
            last_exit: None,
        }
    }

    #[test]
    fn routes_methods_and_readiness() {
        let (tx, s) = shared(Status::default());
        assert_eq!(
            get(&s, Method::GET, "/healthz"),
            (StatusCode::OK, "ok\n".into())
        );
        // Nothing published yet: not ready, although no worker is blocked.
        assert_eq!(
            get(&s, Method::GET, "/readyz"),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting\n".into()
            )
        );
        tx.send_replace(Arc::new(Status {
            replicas: vec![running("a")],
            ..Status::default()
        }));
        assert_eq!(get(&s, Method::GET, "/readyz").0, StatusCode::OK);
        let mut blocked = running("a");
        blocked.state = "auth-blocked".into();
        tx.send_replace(Arc::new(Status {
            replicas: vec![blocked],
            ..Status::default()
        }));
        let (code, body) = get(&s, Method::GET, "/readyz");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("a.0 is auth-blocked"), "{body}");
        assert_eq!(get(&s, Method::GET, "/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&s, Method::POST, "/healthz").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get(&s, Method::HEAD, "/healthz").0, StatusCode::OK);
        assert_eq!(get(&s, Method::GET, "/healthz?verbose=1").0, StatusCode::OK);
    }

    #[test]
    fn metrics_content_type_follows_accept() {
        let (_tx, s) = shared(Status {
            replicas: vec![running("a")],
            ..Status::default()
        });
        let req = Request::builder()
            .uri("/metrics")
            .header(
                ACCEPT,
                "application/openmetrics-text;version=1.0.0,*/*;q=0.1",
            )
            .body(())
            .expect("request");
        let r = s.respond(&req);
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(futures_body(r).ends_with("# EOF\n"));
        let req = Request::builder()
            .uri("/metrics")
            .body(())
            .expect("request");
        let r = s.respond(&req);
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = futures_body(r);
        assert!(
            body.contains("agentsup_worker_up{worker=\"a\"} 1\n"),
            "{body}"
        );
        assert!(body.contains("agentsup_ready 1\n"), "{body}");
    }
}
