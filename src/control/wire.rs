//! The control protocol on the wire: one JSON object per line each way.
//!
//! Requests are [`ControlRequest`](crate::status::ControlRequest) as serde writes it (`{"cmd":"status"}`,
//! `{"cmd":"restart","target":"planner.1"}`, `{"cmd":"reload"}`); answers are
//! [`ControlResponse`] (`{"ok":true,"message":"…","status":null}`).
//!
//! One field needs help: `counters.restarts` is keyed by `(worker, reason)`, and
//! JSON object keys can only be strings, so serde_json refuses it as derived. On
//! the wire (and in `agentsup status --format json`) it is nested instead:
//! `{"planner": {"manual": 2, "auth": 1}}`.

use serde_json::{Map, Value};

use crate::status::{ControlResponse, Status};

/// Most bytes one request line may hold; a longer one is answered with an error and
/// the connection closed, so a confused client cannot make us buffer without bound.
pub(crate) const MAX_REQUEST: usize = 64 * 1024;

/// Most bytes a client reads for one answer (a status of thousands of replicas fits).
pub(crate) const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// [`Status`] as JSON, with `counters.restarts` nested by worker then reason.
pub fn status_to_json(s: &Status) -> Value {
    let mut restarts = Map::new();
    for ((worker, reason), n) in &s.counters.restarts {
        if let Value::Object(m) = restarts
            .entry(worker.clone())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            m.insert(reason.clone(), Value::from(*n));
        }
    }
    let mut plain = s.clone();
    plain.counters.restarts.clear();
    // Only string keys are left, so this cannot fail; Null is a safe "never".
    let mut v = serde_json::to_value(&plain).unwrap_or(Value::Null);
    if let Some(Value::Object(c)) = v.get_mut("counters") {
        c.insert("restarts".into(), Value::Object(restarts));
    }
    v
}

/// The inverse of [`status_to_json`].
pub fn status_from_json(mut v: Value) -> Result<Status, String> {
    let nested = v
        .get_mut("counters")
        .and_then(|c| c.get_mut("restarts"))
        .map(|r| std::mem::replace(r, Value::Object(Map::new())));
    let mut s: Status = serde_json::from_value(v).map_err(|e| e.to_string())?;
    if let Some(Value::Object(by_worker)) = nested {
        for (worker, reasons) in by_worker {
            let Value::Object(reasons) = reasons else {
                return Err(format!("counters.restarts.{worker} is not an object"));
            };
            for (reason, n) in reasons {
                let n = n
                    .as_u64()
                    .ok_or_else(|| format!("counters.restarts.{worker}.{reason} is not a count"))?;
                s.counters.restarts.insert((worker.clone(), reason), n);
            }
        }
    }
    Ok(s)
}

/// One answer line, without the newline.
pub(crate) fn encode_response(r: &ControlResponse) -> String {
    let v = serde_json::json!({
        "ok": r.ok,
        "message": r.message,
        "status": r.status.as_ref().map(status_to_json),
    });
    v.to_string()
}

/// Parses one answer line.
pub(crate) fn decode_response(line: &str) -> Result<ControlResponse, String> {
    let mut v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let status = match v.get_mut("status").map(Value::take) {
        None | Some(Value::Null) => None,
        Some(s) => Some(status_from_json(s)?),
    };
    Ok(ControlResponse {
        ok: v
            .get("ok")
            .and_then(Value::as_bool)
            .ok_or("no \"ok\" field")?,
        message: v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ControlRequest, ReplicaStatus};

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
                state: "running".into(),
                uptime_secs: Some(0.25),
                restarts: 2,
                last_exit: Some("auth".into()),
                ready: None,
            }],
            ..Status::default()
        };
        s.counters
            .restarts
            .insert(("planner".into(), "manual".into()), 2);
        s.counters
            .restarts
            .insert(("planner".into(), "auth".into()), 1);
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
