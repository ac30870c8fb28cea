//! A minimal HTTP client for the health port: every test that asks `/healthz`,
//! `/readyz` or `/metrics` goes through here.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::Running;

/// One response: status code, raw headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub code: u16,
    /// The header block, lowercased.
    pub headers: String,
    /// The body.
    pub body: String,
}

/// A minimal HTTP/1.0 client: one request per connection, read until the server
/// closes it. `None` when nothing is listening (yet) or the exchange fails.
pub fn request(port: u16, method: &str, path: &str, accept: Option<&str>) -> Option<Reply> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{accept}\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reply {
        code,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

/// `GET path`: see [`request`].
pub fn get(port: u16, path: &str) -> Option<Reply> {
    request(port, "GET", path, None)
}

/// Polls `GET path` until `ok(reply)` holds; panics with the last reply and the
/// supervisor's output otherwise.
pub fn poll(run: &Running, port: u16, path: &str, ok: impl Fn(&Reply) -> bool) -> Reply {
    let end = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        if let Some(reply) = get(port, path) {
            if ok(&reply) {
                return reply;
            }
            last = Some(reply);
        }
        if Instant::now() >= end {
            panic!(
                "GET {path} never gave the expected answer; last: {last:?}\n--- agentsup output ---\n{}",
                run.output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
