//! The control protocol on the wire: one JSON object per line each way.
//!
//! Requests are [`ControlRequest`](crate::status::ControlRequest) as serde writes it (`{"cmd":"status"}`,
//! `{"cmd":"restart","target":"planner.1"}`, `{"cmd":"reload"}`); answers are
//! [`ControlResponse`] (`{"ok":true,"message":"…","status":null}`).

use crate::status::ControlResponse;

/// Most bytes one request line may hold; a longer one is answered with an error and
/// the connection closed, so a confused client cannot make us buffer without bound.
pub(crate) const MAX_REQUEST: usize = 64 * 1024;

/// Most bytes a client reads for one answer (a status of thousands of replicas fits).
pub(crate) const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// One answer line, without the newline. Every map key in a response is a string
/// (the restart counters are nested by worker, then reason), so this cannot fail.
pub(crate) fn encode_response(r: &ControlResponse) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// Parses one answer line.
pub(crate) fn decode_response(line: &str) -> Result<ControlResponse, String> {
    serde_json::from_str(line).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::StateKind;
    use crate::status::{ControlRequest, ReplicaStatus, RestartReason, Status};

    #[test]
    fn responses_round_trip_with_counters() {
        let mut s = Status {
            config: "/srv/supervisor.toml".into(),
            pid: 42,
            uptime_secs: 1.5,
            replicas: vec![ReplicaStatus {
                worker: "planner".into(),
                replica: 1,
                pid: Some(7),
                state: StateKind::Running,
                uptime_secs: Some(0.25),
                restarts: 2,
                last_exit: Some("auth".into()),
                ready: None,
            }],
            ..Status::default()
        };
        let planner = s.counters.restarts.entry("planner".into()).or_default();
        planner.insert(RestartReason::Manual, 2);
        planner.insert(RestartReason::Auth, 1);
        s.counters.auth_failures.insert("planner".into(), 1);
        let r = ControlResponse {
            ok: true,
            message: "ok".into(),
            status: Some(s),
        };
        let line = encode_response(&r);
        assert!(!line.contains('\n'));
        assert!(
            line.contains(r#""restarts":{"planner":{"auth":1,"manual":2}}"#),
            "{line}"
        );
        assert_eq!(decode_response(&line).unwrap(), r);
    }

    #[test]
    fn requests_are_tagged_by_cmd() {
        let r: ControlRequest =
            serde_json::from_str(r#"{"cmd":"restart","target":"planner.1"}"#).unwrap();
        assert_eq!(
            r,
            ControlRequest::Restart {
                target: "planner.1".into()
            }
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Reload).unwrap(),
            r#"{"cmd":"reload"}"#
        );
    }
}
