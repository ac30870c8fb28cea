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
//!
//! # Not starved by idle connections
//!
//! Connections are capped in total ([`MAX_CONNECTIONS`]) and per peer address
//! ([`MAX_PER_PEER`]). When a new connection would pass a cap it is still served:
//! the connection that has been idle longest (of that peer, or of all) is closed
//! instead. So a client holding hundreds of idle sockets, or reopening them every
//! few seconds, cannot lock the kubelet's probe out; it only evicts itself. A
//! request head must arrive within [`HEADER_TIMEOUT`].

mod metrics;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::status::Status;

use metrics::Format;

/// At most this many connections are open at once; a new one past the cap closes
/// the longest-idle one. Probes and scrapers use one or two; the cap keeps a
/// misbehaving client from growing the supervisor's memory without bound.
const MAX_CONNECTIONS: usize = 64;

/// At most this many connections from one peer address; past it, that peer's own
/// longest-idle connection is closed.
const MAX_PER_PEER: usize = 16;

/// A client must send its request head within this time, or its connection is
/// closed (hyper's slow-loris guard; its default is 30 s).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the health address before any worker starts, so a port clash is a
/// start-up error rather than a half-started supervisor.
pub(crate) async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/healthz`, `/readyz` and `/metrics` from `status` until the process ends.
///
/// Must be called from within the tokio runtime; returns at once (the server runs
/// on spawned tasks).
pub(crate) fn serve(listener: TcpListener, status: watch::Receiver<Arc<Status>>) {
    let shared = Arc::new(Shared {
        status,
        serving_since: Instant::now(),
    });
    let conns = Arc::new(Conns::default());
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: the condition persists for a while, so
                    // pause instead of spinning (and logging) in a tight loop.
                    tracing::warn!(
                        "health endpoint: cannot accept a connection: {}",
                        crate::limits::explain(&e)
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (id, evicted) = conns.admit(peer.ip());
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                let active = conns.clone();
                let service = hyper::service::service_fn(move |req| {
                    active.touch(id);
                    let response = shared.respond(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                // Errors here are the client's (reset, timeout, bad request): they
                // end that connection and nothing else.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = evicted => {}
                }
                conns.remove(id);
            });
        }
    });
}

/// The open connections, for the caps.
#[derive(Default)]
struct Conns {
    state: Mutex<ConnsState>,
}

#[derive(Default)]
struct ConnsState {
    next: u64,
    open: HashMap<u64, Conn>,
}

struct Conn {
    peer: IpAddr,
    /// Accepted, or last request.
    last: Instant,
    /// Held only to be dropped: that ends the connection's task.
    _close: oneshot::Sender<()>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection from `peer`, first closing the longest-idle one
    /// of that peer (over [`MAX_PER_PEER`]) or of all (over [`MAX_CONNECTIONS`]).
    fn admit(&self, peer: IpAddr) -> (u64, oneshot::Receiver<()>) {
        let mut st = self.lock();
        let of_peer = st.open.values().filter(|c| c.peer == peer).count();
        let victim = if of_peer >= MAX_PER_PEER {
            st.oldest(|c| c.peer == peer)
        } else if st.open.len() >= MAX_CONNECTIONS {
            st.oldest(|_| true)
        } else {
            None
        };
        if let Some(v) = victim {
            // Dropping its sender ends the connection's task.
            st.open.remove(&v);
        }
        let (tx, rx) = oneshot::channel();
        st.next += 1;
        let id = st.next;
        st.open.insert(
            id,
            Conn {
                peer,
                last: Instant::now(),
                _close: tx,
            },
        );
        (id, rx)
    }

    fn touch(&self, id: u64) {
        if let Some(c) = self.lock().open.get_mut(&id) {
            c.last = Instant::now();
        }
    }

    fn remove(&self, id: u64) {
        self.lock().open.remove(&id);
    }
}

impl ConnsState {
    fn oldest(&self, pick: impl Fn(&Conn) -> bool) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, c)| pick(c))
            .min_by_key(|(_, c)| c.last)
            .map(|(id, _)| *id)
    }
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
pub(crate) fn readiness(status: &Status) -> Result<(), String> {
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
            state: crate::replica::StateKind::Running,
            uptime_secs: Some(1.0),
            restarts: 0,
            last_exit: None,
            ready: None,
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
        blocked.state = crate::replica::StateKind::AuthBlocked;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthz_answers_with_300_idle_connections_open() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(Arc::new(Status::default()));
        serve(listener, rx);
        let mut idle = Vec::new();
        for _ in 0..300 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let get = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            reply
        };
        let reply = tokio::time::timeout(Duration::from_secs(1), get)
            .await
            .expect("/healthz answered within a second");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        // The idle ones were closed to make room, oldest first.
        let mut closed = 0;
        for s in &mut idle[..200] {
            let mut b = [0u8; 1];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await
            {
                closed += 1;
            }
        }
        assert!(
            closed >= 190,
            "only {closed} of the oldest idle connections were closed"
        );
    }
}
