//! The wire format between agentsup and the template (`src/fork_template.py` has
//! the same description from the other side).
//!
//! JSON lines over a Unix stream socket. A fork request is the one message that
//! carries file descriptors (the child's stdout and stderr write ends, by
//! `SCM_RIGHTS`) and secrets (the environment). Its environment comes after a TAB,
//! so the template can parse the header without turning the environment into Python
//! strings; compact JSON never contains a raw TAB, so the split is unambiguous.

use serde::{Deserialize, Serialize, Serializer};

use crate::auth::Termination;

/// The first line agentsup sends: what to preload and what each child runs.
#[derive(Debug, Serialize)]
pub(super) struct Config<'a> {
    pub(super) preload: &'a [String],
    pub(super) module: Option<&'a str>,
    pub(super) script: Option<&'a str>,
}

/// The non-secret part of a fork request.
#[derive(Debug, Serialize)]
struct ForkHeader<'a> {
    id: u64,
    argv: &'a [String],
    cwd: &'a str,
    /// How many descriptors ride with this request (stdout, stderr).
    fds: u32,
}

/// One line from the template.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Message {
    /// Preloading finished; requests are served from now on.
    Ready {
        pid: u32,
        python: String,
        /// Threads other than the main one: preloaded modules started them, and
        /// forked children will not have them.
        #[serde(default)]
        threads: Vec<String>,
    },
    /// A preload module raised; the template exits after sending this.
    PreloadFailed { module: String, traceback: String },
    /// Request `id` became child `pid`, already its own session and group.
    Forked { id: u64, pid: u32 },
    /// Request `id` did not produce a running child.
    ForkFailed { id: u64, error: String },
    /// The template reaped child `pid`.
    Exit {
        pid: u32,
        #[serde(default)]
        code: Option<i32>,
        #[serde(default)]
        signal: Option<i32>,
    },
}

impl Message {
    /// How an `Exit` ended; `None` for other messages or a malformed exit.
    pub(crate) fn termination(&self) -> Option<Termination> {
        match *self {
            Message::Exit {
                signal: Some(sig), ..
            } => Some(Termination::Signaled(sig)),
            Message::Exit { code: Some(c), .. } => Some(Termination::Exited(c)),
            _ => None,
        }
    }
}

/// Serializes `(name, value)` pairs as a JSON object without an intermediate map,
/// so values are copied only into the request buffer. A repeated name is kept
/// twice; Python's `json.loads` keeps the last, as `Command::envs` does.
struct EnvObject<'a>(&'a [(String, String)]);

impl Serialize for EnvObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The bytes of one fork request: header, TAB, environment, LF.
pub(crate) fn fork_request(
    id: u64,
    argv: &[String],
    cwd: &str,
    env: &[(String, String)],
) -> serde_json::Result<Vec<u8>> {
    let mut out = serde_json::to_vec(&ForkHeader {
        id,
        argv,
        cwd,
        fds: 2,
    })?;
    // Sized exactly before the environment goes in: a buffer that grew would
    // leave unwiped copies of the values behind in freed memory.
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, &EnvObject(env))?;
    out.reserve_exact(counter.0 + 2);
    out.push(b'\t');
    serde_json::to_writer(&mut out, &EnvObject(env))?;
    out.push(b'\n');
    Ok(out)
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Overwrites a buffer that held an environment before it is freed (`zeroize`:
/// volatile stores the compiler cannot drop).
pub(super) fn wipe(buf: &mut [u8]) {
    zeroize::Zeroize::zeroize(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_splits_header_and_environment_at_the_only_tab() {
        let env = vec![
            ("A".to_string(), "tab\there".to_string()),
            ("B".to_string(), "line\nbreak".to_string()),
            ("A".to_string(), "last wins".to_string()),
        ];
        let argv = vec!["mod".to_string(), "--x".to_string()];
        let bytes = fork_request(7, &argv, "/w", &env).unwrap();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\t').count(), 1);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(bytes.ends_with(b"\n"));
        let text = std::str::from_utf8(&bytes).unwrap().trim_end();
        let (header, env_json) = text.split_once('\t').unwrap();
        let header: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"id": 7, "argv": ["mod", "--x"], "cwd": "/w", "fds": 2})
        );
        assert!(env_json.starts_with(r#"{"A":"tab\there","B":"line\nbreak","A":"#));
    }

    #[test]
    fn messages_parse() {
        let m: Message = serde_json::from_str(r#"{"event":"exit","pid":5,"signal":15}"#).unwrap();
        assert_eq!(m.termination(), Some(Termination::Signaled(15)));
        let m: Message = serde_json::from_str(r#"{"event":"exit","pid":5,"code":3}"#).unwrap();
        assert_eq!(m.termination(), Some(Termination::Exited(3)));
        let m: Message =
            serde_json::from_str(r#"{"event":"ready","pid":9,"python":"3.12.1"}"#).unwrap();
        assert_eq!(
            m,
            Message::Ready {
                pid: 9,
                python: "3.12.1".into(),
                threads: vec![]
            }
        );
        let m: Message = serde_json::from_str(r#"{"event":"forked","id":1,"pid":42}"#).unwrap();
        assert_eq!(m, Message::Forked { id: 1, pid: 42 });
    }

    #[test]
    fn wipe_zeroes() {
        let mut b = b"secret".to_vec();
        wipe(&mut b);
        assert_eq!(b, vec![0; 6]);
    }

    #[test]
    fn request_never_reallocates_once_the_environment_is_in() {
        let env = vec![("K".to_string(), "\u{1}\"q\\".repeat(500))];
        let req = fork_request(1, &["m".into()], "/", &env).unwrap();
        assert_eq!(req.len(), req.capacity(), "sized exactly up front");
    }
}
