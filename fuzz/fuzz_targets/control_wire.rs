//! The control-socket protocol (src/control/wire.rs and the server's request
//! decoding): one JSON object per line each way.
//!
//! - any bytes as a request or an answer line: no panic;
//! - a request that decodes re-encodes to a request that decodes to itself;
//! - an answer that decodes re-encodes to one line (no raw newline: the protocol is
//!   line-framed) that decodes to itself.
#![no_main]

use agentsup::fuzzing::{decode_request, decode_response, encode_response};
use agentsup::status::ControlRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_request(data) {
        let again = serde_json::to_vec(&req).expect("a request serializes");
        assert!(!again.contains(&b'\n'));
        assert_eq!(decode_request(&again).ok(), Some(req.clone()));
        if let ControlRequest::Restart { target } = &req {
            // The target is carried verbatim, whatever it holds.
            let line = serde_json::json!({"cmd": "restart", "target": target}).to_string();
            assert_eq!(decode_request(line.as_bytes()).ok(), Some(req));
        }
    }
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(resp) = decode_response(line) {
        let again = encode_response(&resp);
        assert!(!again.contains('\n'), "an answer spans lines");
        let back = decode_response(&again).expect("an encoded answer decodes");
        assert_eq!(back, resp);
    }
});
