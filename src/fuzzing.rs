//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer).
//!
//! Not an API: it only reaches a few crate-private decoders so the fuzz crate can
//! drive exactly the code agentsup runs, without widening the modules themselves.
//! One facade keeps the visibility changes in one place while the modules behind
//! it are refactored. The regression tests for inputs the fuzzers found live here
//! too (`tests` below), each with its minimised input.

use crate::auth::Termination;
use crate::status::{ControlRequest, ControlResponse};

/// How `agentsup env --format dotenv` writes a value (quoted when it has to be).
pub fn dotenv_quote(value: &str) -> String {
    crate::env_report::dotenv_quote(value)
}

/// A control-socket request line decoded as the server decodes it.
pub fn decode_request(line: &[u8]) -> Result<ControlRequest, String> {
    serde_json::from_slice::<ControlRequest>(line).map_err(|e| e.to_string())
}

/// A control-socket answer line decoded as the client decodes it.
pub fn decode_response(line: &str) -> Result<ControlResponse, String> {
    crate::control::wire::decode_response(line)
}

/// A control-socket answer as the server writes it (without the newline).
pub fn encode_response(r: &ControlResponse) -> String {
    crate::control::wire::encode_response(r)
}

/// One line from a fork template, decoded as agentsup decodes it. `Ok` carries
/// whether the message was an `exit` and how the child ended, if it says.
pub fn decode_fork_message(line: &[u8]) -> Result<(bool, Option<Termination>), String> {
    let m: crate::fork::proto::Message = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let is_exit = matches!(m, crate::fork::proto::Message::Exit { .. });
    Ok((is_exit, m.termination()))
}

/// The bytes of one fork request (header, TAB, environment, LF).
pub fn fork_request(
    id: u64,
    argv: &[String],
    cwd: &str,
    env: &[(String, String)],
) -> serde_json::Result<Vec<u8>> {
    crate::fork::proto::fork_request(id, argv, cwd, env)
}

/// Regression tests for what the fuzz targets found, each with its minimised input.
#[cfg(test)]
mod tests {
    use std::path::Path;

    /// fuzz target `config`: a string where the schema wants another type was
    /// quoted back by toml's `invalid type: string "…"`. A value typed into the
    /// wrong field (`probe = "<token>"`, `command = "<token>"`) must not be shown.
    #[test]
    fn config_type_error_does_not_quote_the_string() {
        for text in [
            "[supervisor]\nprobe = \"sk-fuzz-planted-1\"\n",
            "[[worker]]\nname = \"w\"\ncommand = \"sk-fuzz-planted-1\"\n",
            "[[worker]]\nname = \"w\"\ncommand = [\"x\"]\nreplicas = \"sk-fuzz-planted-1\"\n",
        ] {
            let e = crate::config::parse(Path::new("s.toml"), text).unwrap_err();
            assert!(!e.to_string().contains("sk-fuzz-planted-1"), "{e}");
        }
    }

    /// fuzz target `config`: serde fills a table from an array by position, so
    /// `backoff = ["<token>"]` makes the token `initial`, and the duration error
    /// quotes it.
    #[test]
    fn config_table_given_as_array_does_not_quote_its_string() {
        let text =
            "[[worker]]\nname = \"w\"\ncommand = [\"x\"]\nbackoff = [\"sk-fuzz-planted-1\"]\n";
        let e = crate::config::parse(Path::new("s.toml"), text).unwrap_err();
        assert!(!e.to_string().contains("sk-fuzz-planted-1"), "{e}");
    }

    /// fuzz target `config`: a `vars` value, whatever surrounds it, is never shown.
    #[test]
    fn config_vars_values_never_shown() {
        for text in [
            "[env]\nvars = { A = \"sk-fuzz-planted-2\", B = 3 }\n",
            "[[worker]]\nname = \"w\"\ncommand = [\"x\"]\n[worker.vars]\nK = \"sk-fuzz-planted-2\"\nK = \"x\"\n",
            "[env]\nvars = { A = \"sk-fuzz-planted-2\" }\n[env]\n",
        ] {
            let e = crate::config::parse(Path::new("s.toml"), text).unwrap_err();
            assert!(!e.to_string().contains("sk-fuzz-planted-2"), "{e}");
        }
    }
    /// fuzz target `redact` (after the run-of-16-bytes forms were merged): one
    /// secret repeated four times, cut once at byte 51. Feeding the two pieces to a
    /// `StreamRedactor` must give exactly what one whole `redact_into` gives.
    #[test]
    fn stream_redaction_equals_whole_write() {
        use crate::redact::{Redactor, StreamRedactor};
        use crate::secret::Sensitive;
        let secret = "66666666666666666,666666666666t sk-";
        let r = Redactor::new([("K0".to_string(), Sensitive::new(secret))]);
        let input = secret.repeat(4);
        let mut whole = Vec::new();
        r.redact_into(input.as_bytes(), &mut whole);
        let mut streamed = Vec::new();
        let mut s = StreamRedactor::new();
        s.feed(&r, &input.as_bytes()[..51], &mut streamed);
        s.feed(&r, &input.as_bytes()[51..], &mut streamed);
        s.finish(&r, &mut streamed);
        assert_eq!(
            String::from_utf8_lossy(&streamed),
            String::from_utf8_lossy(&whole)
        );
        assert!(!String::from_utf8_lossy(&streamed).contains(secret));
    }

    /// fuzz target `redact`, 7 December: a run of a secret that starts inside a
    /// multi-byte char of the text (`ガ` is E3 82 AC, `€` is E2 82 AC: the run
    /// begins at the shared 82). `redact_str` must give the lossy text of the byte
    /// output (the cut char as U+FFFD), never panic, and show no run of the secret.
    #[test]
    fn redacted_run_starting_inside_a_char_is_shown_lossy() {
        use crate::redact::Redactor;
        use crate::secret::Sensitive;
        let secret = "€bcdefghijklmnopqrs";
        let r = Redactor::new([("K0".to_string(), Sensitive::new(secret))]);
        let text = "say ガbcdefghijklmnopqrs done";
        let mut whole = Vec::new();
        r.redact_into(text.as_bytes(), &mut whole);
        let shown = r.redact_str(text);
        assert_eq!(shown, String::from_utf8_lossy(&whole));
        assert!(!shown.contains("bcdefghijklmnopqrs"), "{shown}");
        assert!(shown.contains("\u{fffd}[redacted:K0]"), "{shown}");
    }
}
