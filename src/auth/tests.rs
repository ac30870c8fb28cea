//! Unit tests of `auth` (kept apart: the module itself stays readable).

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/sdk_output/", $name))
    };
}

/// The injected key of the wrong-key captures (fake): first 8 + 36 hidden + WXYZ.
const WRONG_KEY: &str = "sk-proj-FAKEfake0123456789FAKEfake0123456789WXYZ";
/// The quoted key of case d3 (fake), quotes included as the worker received it.
const QUOTED_KEY: &str = "\"sk-test-FAKEfake0123456789FAKEfake012GOOD\"";

fn input<'a>(tail: &'a str, injected: &'a [(String, Sensitive)]) -> ClassifyInput<'a> {
    ClassifyInput {
        termination: Termination::Exited(1),
        was_stop_requested: false,
        exit_codes: &[],
        patterns: &[],
        tail,
        injected,
    }
}

fn failed(tail: &str) -> Classification {
    classify(&input(tail, &[]))
}

fn key(name: &str, value: &str) -> (String, Sensitive) {
    (name.to_owned(), Sensitive::new(value))
}

/// Every captured case of auth-signatures.md §3 that we reproduce, plus Part C
/// providers, with the class §7 assigns and the signature we expect to report.
#[test]
fn every_fixture_gets_its_class() {
    use ExitClass::{Auth, Config, Crash};
    #[rustfmt::skip]
    let cases: &[(&str, &str, ExitClass, Option<&str>)] = &[
        ("openai-python b", fixture!("openai-python-wrong-key.txt"), Auth, Some("Incorrect API key provided")),
        ("openai-python d3", fixture!("openai-python-quoted-key.txt"), Auth, Some("Incorrect API key provided")),
        ("openai-python c1", fixture!("openai-python-missing-key.txt"), Config, Some("Missing credentials. Please pass")),
        ("openai-python d1", fixture!("openai-python-trailing-newline.txt"), Config, Some("Illegal header value")),
        ("openai-python e", fixture!("openai-python-quota-429.txt"), Crash, None),
        ("openai-python f", fixture!("openai-python-server-down.txt"), Crash, None),
        ("anthropic-python b", fixture!("anthropic-python-wrong-key.txt"), Auth, Some("invalid x-api-key")),
        ("anthropic-python b2", fixture!("anthropic-python-bearer-token.txt"), Auth, Some("Invalid bearer token")),
        ("anthropic-python c1", fixture!("anthropic-python-missing-key.txt"), Config, Some("Could not resolve authentication method")),
        ("anthropic-python d2", fixture!("anthropic-python-trailing-space.txt"), Config, Some("Illegal header value")),
        ("anthropic-python e", fixture!("anthropic-python-quota-429.txt"), Crash, None),
        ("langgraph-python b", fixture!("langgraph-python-wrong-key.txt"), Auth, Some("Incorrect API key provided")),
        ("langgraph-python d1", fixture!("langgraph-python-trailing-newline.txt"), Config, Some("Illegal header value")),
        ("autogen-python b", fixture!("autogen-python-wrong-key.txt"), Auth, Some("Incorrect API key provided")),
        ("autogen-team-python b", fixture!("autogen-team-python-wrong-key.txt"), Auth, Some("Incorrect API key provided")),
        ("ag2-python b", fixture!("ag2-python-wrong-key.txt"), Auth, Some("Incorrect API key provided")),
        ("openai-node b", fixture!("openai-node-wrong-key.txt"), Auth, Some("Incorrect API key provided")),
        ("openai-node d3", fixture!("openai-node-quoted-key.txt"), Auth, Some("Incorrect API key provided")),
        ("openai-node c1", fixture!("openai-node-missing-key.txt"), Config, Some("Missing credentials. Please pass")),
        ("openai-node e", fixture!("openai-node-quota-429.txt"), Crash, None),
        ("openai-node f", fixture!("openai-node-server-down.txt"), Crash, None),
        ("anthropic-node b", fixture!("anthropic-node-wrong-key.txt"), Auth, Some("invalid x-api-key")),
        ("anthropic-node b2", fixture!("anthropic-node-bearer-token.txt"), Auth, Some("Invalid bearer token")),
        ("anthropic-node c1", fixture!("anthropic-node-missing-key.txt"), Config, Some("Could not resolve authentication method")),
        ("anthropic-node e", fixture!("anthropic-node-quota-429.txt"), Crash, None),
        ("langgraph-node b", fixture!("langgraph-node-wrong-key.txt"), Auth, Some("Incorrect API key provided")),
        ("langgraph-node e", fixture!("langgraph-node-quota-429.txt"), Crash, None),
        ("google-genai 400", fixture!("google-genai-python-invalid-key.txt"), Auth, Some("API key not valid")),
        ("google-genai 403 disabled", fixture!("google-genai-python-service-disabled.txt"), Crash, None),
        ("google-genai missing", fixture!("google-genai-python-missing-key.txt"), Config, Some("No API key was provided")),
        ("azure 401", fixture!("azure-openai-python-401.txt"), Auth, Some("Access denied due to invalid subscription key or wrong API endpoint")),
        ("azure no version", fixture!("azure-openai-python-missing-version.txt"), Config, Some("Must provide either the")),
        ("mistral 401", fixture!("mistral-python-401.txt"), Auth, Some(r"API error occurred: Status 401\b")),
        ("mistral 429", fixture!("mistral-python-429.txt"), Crash, None),
        ("groq 401", fixture!("groq-python-401.txt"), Auth, Some("Invalid API Key")),
        ("cohere 401", fixture!("cohere-python-401.txt"), Auth, Some("invalid api token")),
        ("cohere missing", fixture!("cohere-python-missing-key.txt"), Config, Some("The client must be instantiated be either passing in token or setting CO_API_KEY")),
        ("langchain legacy missing", fixture!("langchain-legacy-missing-key.txt"), Config, Some("Did not find .*_api_key")),
        ("xai 400", fixture!("xai-openai-python-wrong-key.txt"), Auth, Some("Incorrect API key provided")),
        ("healthy python, failing", fixture!("healthy-python.txt"), Crash, None),
        ("healthy node, failing", fixture!("healthy-node.txt"), Crash, None),
        ("401 in an access log", fixture!("python-crash-with-401-access-log.txt"), Crash, None),
    ];
    for (name, tail, class, signature) in cases {
        let got = failed(tail);
        assert_eq!(got.class, *class, "{name}: {}", got.reason);
        assert_eq!(got.signature, *signature, "{name}: {}", got.reason);
    }
}

#[test]
fn healthy_runs_are_ok() {
    for tail in [fixture!("healthy-python.txt"), fixture!("healthy-node.txt")] {
        let mut i = input(tail, &[]);
        i.termination = Termination::Exited(0);
        assert_eq!(classify(&i).class, ExitClass::Ok);
    }
}

#[test]
fn status_zero_is_ok_even_with_a_signature_in_the_output() {
    let mut i = input(fixture!("openai-python-wrong-key.txt"), &[]);
    i.termination = Termination::Exited(0);
    assert_eq!(classify(&i).class, ExitClass::Ok);
}

#[test]
fn our_own_stop_is_not_a_crash() {
    for termination in [
        Termination::Signaled(15),
        Termination::Exited(143),
        Termination::Exited(1),
    ] {
        let mut i = input(fixture!("openai-python-wrong-key.txt"), &[]);
        i.termination = termination;
        i.was_stop_requested = true;
        assert_eq!(classify(&i).class, ExitClass::Ok, "{termination}");
    }
}

#[test]
fn a_signal_we_did_not_send_is_a_crash() {
    let mut i = input(fixture!("openai-python-wrong-key.txt"), &[]);
    i.termination = Termination::Signaled(9);
    let got = classify(&i);
    assert_eq!(got.class, ExitClass::Crash);
    assert!(got.reason.contains("signal 9 (SIGKILL)"), "{}", got.reason);
}

#[test]
fn listed_exit_code_is_auth() {
    let injected = [key("OPENAI_API_KEY", WRONG_KEY)];
    let mut i = input("bye\n", &injected);
    i.termination = Termination::Exited(77);
    i.exit_codes = &[77];
    let got = classify(&i);
    assert_eq!(got.class, ExitClass::Auth);
    assert_eq!(got.tier, None);
    assert!(got.reason.contains("auth.exit_codes"));
    i.termination = Termination::Exited(78);
    assert_eq!(classify(&i).class, ExitClass::Crash);
}

#[test]
fn user_patterns_are_auth_but_config_still_wins() {
    let patterns = [Regex::new(r"token expired for tenant \d+").unwrap()];
    let mut i = input("worker: token expired for tenant 42\nexit\n", &[]);
    i.patterns = &patterns;
    let got = classify(&i);
    assert_eq!(got.class, ExitClass::Auth);
    assert_eq!(got.tier, Some(Tier::Auth));
    assert!(got.reason.contains("auth.patterns"), "{}", got.reason);

    let tail = "token expired for tenant 1\nopenai.OpenAIError: Missing credentials. Please pass an `api_key`\n";
    let mut i = input(tail, &[]);
    i.patterns = &patterns;
    assert_eq!(classify(&i).class, ExitClass::Config);
}

#[test]
fn precedence_is_malformed_then_config_then_auth() {
    let both = format!(
        "{}\n{}",
        fixture!("openai-python-trailing-newline.txt"),
        fixture!("openai-python-wrong-key.txt")
    );
    assert_eq!(failed(&both).tier, Some(Tier::Malformed));
    let both = format!(
        "{}\n{}",
        fixture!("openai-python-wrong-key.txt"),
        fixture!("openai-python-missing-key.txt")
    );
    assert_eq!(failed(&both).tier, Some(Tier::Config));
}

#[test]
fn not_auth_negatives() {
    for tail in [
        "openai.RateLimitError: Error code: 429 - {'error': {'code': 'insufficient_quota'}}",
        "anthropic.RateLimitError: Error code: 429 - {'type': 'rate_limit_error'}",
        "openai.APIConnectionError: Connection error.",
        "httpx.LocalProtocolError: something else entirely",
        "requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url",
        "SDKError: Status 401",
        "mistralai.models.sdkerror.SDKError: API error occurred: Status 4010",
        "google.api_core.exceptions.PermissionDenied: 403 PERMISSION_DENIED: Generative Language API has not been used in project 1 before or it is disabled. [reason: \"SERVICE_DISABLED\"]",
    ] {
        let got = failed(tail);
        assert_eq!(got.class, ExitClass::Crash, "{tail}: {}", got.reason);
    }
}

#[test]
fn mistral_new_format_is_auth() {
    let got =
        failed("SDKError: API error occurred: Status 401. Body: {\"detail\":\"Unauthorized\"}");
    assert_eq!(got.class, ExitClass::Auth);
}

#[test]
fn both_quotings_of_invalid_api_key() {
    assert_eq!(failed("code: 'invalid_api_key'").class, ExitClass::Auth);
    assert_eq!(
        failed(r#"{"code":"invalid_api_key"}"#).class,
        ExitClass::Auth
    );
    assert_eq!(failed("tenacity.RetryError: RetryError[<Future at 0x7f state=finished raised AuthenticationError>]").class, ExitClass::Auth);
}

#[test]
fn wanted_var_is_read_off_the_message() {
    let cases: &[(&str, &str)] = &[
        (fixture!("openai-python-missing-key.txt"), "OPENAI_API_KEY"),
        (fixture!("openai-node-missing-key.txt"), "OPENAI_API_KEY"),
        (
            fixture!("anthropic-python-missing-key.txt"),
            "ANTHROPIC_API_KEY",
        ),
        (
            fixture!("anthropic-node-missing-key.txt"),
            "ANTHROPIC_API_KEY",
        ),
        (
            fixture!("google-genai-python-missing-key.txt"),
            "GOOGLE_API_KEY",
        ),
        (fixture!("cohere-python-missing-key.txt"), "CO_API_KEY"),
        (
            fixture!("langchain-legacy-missing-key.txt"),
            "OPENAI_API_KEY",
        ),
        (
            fixture!("azure-openai-python-missing-version.txt"),
            "OPENAI_API_VERSION",
        ),
        (
            "openai.OpenAIError: Missing credentials. Please pass one of `api_key`, `azure_ad_token`, `azure_ad_token_provider`, or the `AZURE_OPENAI_API_KEY` or `AZURE_OPENAI_AD_TOKEN` environment variables.",
            "AZURE_OPENAI_API_KEY",
        ),
        (
            "groq.GroqError: The api_key client option must be set either by passing api_key to the client or by setting the GROQ_API_KEY environment variable",
            "GROQ_API_KEY",
        ),
        (
            "OpenAIError: The OPENAI_API_KEY environment variable is missing or empty; either provide it, or instantiate the OpenAI client with an apiKey option, like new OpenAI({ apiKey: 'My API Key' }).",
            "OPENAI_API_KEY",
        ),
        (
            "ValueError: Must provide one of the `base_url` or `azure_endpoint` arguments, or the `AZURE_OPENAI_ENDPOINT` environment variable",
            "AZURE_OPENAI_ENDPOINT",
        ),
        (
            "google.auth.exceptions.DefaultCredentialsError: No API_KEY or ADC found. Please either:\n    - Set the `GOOGLE_API_KEY` environment variable.",
            "GOOGLE_API_KEY",
        ),
    ];
    for (tail, want) in cases {
        let got = failed(tail);
        assert_eq!(got.class, ExitClass::Config, "{tail}");
        assert_eq!(got.wanted_var.as_deref(), Some(*want), "{tail}");
        assert!(got.reason.contains(want), "{}", got.reason);
    }
}

#[test]
fn malformed_names_the_dirty_injected_key_and_never_the_value() {
    let value = "sk-test-FAKEfake0123456789FAKEfake012GOOD\n";
    let injected = [
        key("LANGSMITH_API_KEY", "lsv2-clean-value-0000"),
        key("OPENAI_API_KEY", value),
    ];
    for tail in [
        fixture!("openai-python-trailing-newline.txt"),
        fixture!("langgraph-python-trailing-newline.txt"),
    ] {
        let got = classify(&input(tail, &injected));
        assert_eq!(got.class, ExitClass::Config);
        assert_eq!(got.tier, Some(Tier::Malformed));
        assert_eq!(got.wanted_var.as_deref(), Some("OPENAI_API_KEY"));
        assert!(
            got.reason.contains(
                "the worker declares OPENAI_API_KEY, which as injected holds surrounding \
                 whitespace or a control character"
            ),
            "{}",
            got.reason
        );
        // The replica adds "restarting cannot help" once, for every config exit.
        assert!(!got.reason.contains("cannot help"), "{}", got.reason);
        assert!(!got.reason.contains("LANGSMITH"), "{}", got.reason);
        assert!(!got.reason.contains("FAKEfake"), "{}", got.reason);
    }
    // Found by the echoed header when the injected value itself looks clean.
    let injected = [key("OPENAI_API_KEY", value.trim())];
    let got = classify(&input(
        fixture!("openai-python-trailing-newline.txt"),
        &injected,
    ));
    assert_eq!(got.wanted_var.as_deref(), Some("OPENAI_API_KEY"));
    assert!(
        got.reason
            .contains("the refused header holds the value of OPENAI_API_KEY"),
        "{}",
        got.reason
    );
    assert!(!got.reason.contains("FAKEfake"), "{}", got.reason);
}

#[test]
fn malformed_names_every_dirty_declared_key() {
    let tail = "httpx.LocalProtocolError: Illegal header value b'Bearer sk-abc '";
    let injected = [
        key("ANTHROPIC_API_KEY", "sk-ant-api03-DIRTYdirty0123456789 "),
        key("MODEL", "gpt-4o"),
        key("OPENAI_API_KEY", "sk-proj-DIRTYdirty0123\u{1b}456789"),
    ];
    let got = classify(&input(tail, &injected));
    assert_eq!(got.class, ExitClass::Config);
    assert_eq!(got.wanted_var.as_deref(), Some("ANTHROPIC_API_KEY"));
    assert!(
        got.reason.contains(
            "the worker declares ANTHROPIC_API_KEY and OPENAI_API_KEY, which as injected \
             hold surrounding whitespace"
        ),
        "{}",
        got.reason
    );
    assert!(!got.reason.contains("MODEL"), "{}", got.reason);
    assert!(!got.reason.contains("DIRTY"), "{}", got.reason);
    assert!(!got.reason.contains("cannot help"), "{}", got.reason);
}

#[test]
fn malformed_without_a_candidate_lists_the_checked_keys() {
    // The worker sent a hard-coded key: every declared value is clean, and none is
    // in the refused header.
    let tail = "httpx.LocalProtocolError: Illegal header value b\"Bearer sk-abc \"";
    let injected = [
        key("OPENAI_API_KEY", "sk-proj-CLEANclean0123456789"),
        key("LANGSMITH_API_KEY", "lsv2-clean-value-0000"),
        key("MODEL", "gpt-4o"),
    ];
    let got = classify(&input(tail, &injected));
    assert_eq!(got.class, ExitClass::Config);
    assert_eq!(got.tier, Some(Tier::Malformed));
    assert_eq!(got.wanted_var, None);
    assert!(
        got.reason.contains(
            "no declared key holds surrounding whitespace or a control character as \
             injected (checked OPENAI_API_KEY, LANGSMITH_API_KEY and MODEL)"
        ),
        "{}",
        got.reason
    );
    assert!(got.reason.contains("hard-coded"), "{}", got.reason);
    for leak in ["CLEANclean", "lsv2-clean", "gpt-4o", "sk-abc"] {
        assert!(!got.reason.contains(leak), "{leak} in {}", got.reason);
    }
    assert!(!got.reason.contains("cannot help"), "{}", got.reason);

    let got = classify(&input(tail, &[]));
    assert_eq!(got.wanted_var, None);
    assert!(
        got.reason
            .contains("the worker declares no key that was set when it started"),
        "{}",
        got.reason
    );
}

#[test]
fn missing_credential_reason_does_not_say_cannot_help() {
    let got = failed(fixture!("openai-python-missing-key.txt"));
    assert_eq!(got.class, ExitClass::Config);
    assert!(
        got.reason
            .contains("the SDK found no credential (it wants OPENAI_API_KEY)"),
        "{}",
        got.reason
    );
    assert!(!got.reason.contains("cannot help"), "{}", got.reason);
}

#[test]
fn fingerprint_injected_key_rejected() {
    let injected = [
        key("ANTHROPIC_API_KEY", "sk-ant-api03-unrelated-0000000000"),
        key("OPENAI_API_KEY", WRONG_KEY),
    ];
    for tail in [
        fixture!("openai-python-wrong-key.txt"),
        fixture!("langgraph-python-wrong-key.txt"),
        fixture!("autogen-python-wrong-key.txt"),
        fixture!("autogen-team-python-wrong-key.txt"),
        fixture!("ag2-python-wrong-key.txt"),
        fixture!("openai-node-wrong-key.txt"),
        fixture!("langgraph-node-wrong-key.txt"),
    ] {
        let got = classify(&input(tail, &injected));
        assert_eq!(got.class, ExitClass::Auth);
        assert_eq!(
            got.fingerprint,
            Some(Fingerprint::InjectedKeyRejected {
                key: "OPENAI_API_KEY".into()
            }),
            "{}",
            got.reason
        );
        assert!(
            got.reason.contains("injected OPENAI_API_KEY"),
            "{}",
            got.reason
        );
    }
}

#[test]
fn fingerprint_quoted_key() {
    let injected = [key("OPENAI_API_KEY", QUOTED_KEY)];
    for tail in [
        fixture!("openai-python-quoted-key.txt"),
        fixture!("openai-node-quoted-key.txt"),
    ] {
        let got = classify(&input(tail, &injected));
        assert_eq!(
            got.fingerprint,
            Some(Fingerprint::InjectedKeyRejected {
                key: "OPENAI_API_KEY".into()
            })
        );
    }
}

#[test]
fn fingerprint_other_key_sent() {
    // Same prefix, other suffix: the worker used some other key.
    let injected = [key(
        "OPENAI_API_KEY",
        "sk-proj-FAKEfake0123456789FAKEfake0123456789ABCD",
    )];
    let got = classify(&input(fixture!("openai-python-wrong-key.txt"), &injected));
    assert_eq!(got.fingerprint, Some(Fingerprint::OtherKeySent));
    assert!(
        got.reason.contains("none agentsup injected"),
        "{}",
        got.reason
    );
    let got = classify(&input(fixture!("openai-python-wrong-key.txt"), &[]));
    assert_eq!(got.fingerprint, Some(Fingerprint::OtherKeySent));
}

#[test]
fn fingerprint_xai_and_short_and_star_counts() {
    let injected = [key("XAI_API_KEY", "xai-FAKE-0000FK")];
    let got = classify(&input(
        fixture!("xai-openai-python-wrong-key.txt"),
        &injected,
    ));
    assert_eq!(
        got.fingerprint,
        Some(Fingerprint::InjectedKeyRejected {
            key: "XAI_API_KEY".into()
        })
    );
    // Keys of at most 12 characters are echoed whole.
    let injected = [key("OPENAI_API_KEY", "sk-short-01")];
    let tail = "AuthenticationError: 401 Incorrect API key provided: sk-short-01. You can find your API key at https://platform.openai.com/account/api-keys.";
    assert_eq!(
        classify(&input(tail, &injected)).fingerprint,
        Some(Fingerprint::InjectedKeyRejected {
            key: "OPENAI_API_KEY".into()
        })
    );
    // Part C's older rendering, with a star count unrelated to the hidden length.
    let injected = [key("OPENAI_API_KEY", "sk-abc12-FAKEFAKEFAKEFAKE-wxyz")];
    let tail = "openai.AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key provided: sk-abc12***…***wxyz. You can find your API key at https://platform.openai.com/account/api-keys.', 'type': 'invalid_request_error', 'param': None, 'code': 'invalid_api_key'}}";
    assert_eq!(
        classify(&input(tail, &injected)).fingerprint,
        Some(Fingerprint::InjectedKeyRejected {
            key: "OPENAI_API_KEY".into()
        })
    );
    // No echo, no fingerprint (Anthropic echoes nothing).
    assert_eq!(
        classify(&input(
            fixture!("anthropic-python-wrong-key.txt"),
            &injected
        ))
        .fingerprint,
        None
    );
}

#[test]
fn reasons_never_quote_the_output() {
    let injected = [key("OPENAI_API_KEY", WRONG_KEY)];
    for tail in [
        fixture!("openai-python-wrong-key.txt"),
        fixture!("openai-python-quoted-key.txt"),
        fixture!("openai-python-trailing-newline.txt"),
        fixture!("anthropic-python-wrong-key.txt"),
        fixture!("google-genai-python-invalid-key.txt"),
        fixture!("openai-node-wrong-key.txt"),
    ] {
        let got = classify(&input(tail, &injected));
        for leak in ["FAKE", "****", "WXYZ", "OOD", "req_", "sk-"] {
            assert!(!got.reason.contains(leak), "{leak} in {}", got.reason);
        }
    }
}

#[test]
fn reason_says_how_far_from_the_end() {
    let got = failed(fixture!("openai-python-wrong-key.txt"));
    assert!(got.reason.contains("on the last line"), "{}", got.reason);
    // LangGraph's note comes after the error line.
    let got = failed(fixture!("langgraph-python-wrong-key.txt"));
    assert!(
        got.reason.contains("1 line before the end"),
        "{}",
        got.reason
    );
    // The malformed signature sits about 60 lines up (auth-signatures.md §7): 61
    // lines in the file, 4 of them blank, which the count skips.
    let got = failed(fixture!("langgraph-python-trailing-newline.txt"));
    assert!(
        got.reason.contains("57 lines before the end"),
        "{}",
        got.reason
    );
}

#[test]
fn window_keeps_the_last_200_lines() {
    let filler = |n: usize| "worker: still going\n".repeat(n);
    let inside = format!(
        "openai.AuthenticationError: x\n{}",
        filler(TAIL_MAX_LINES - 1)
    );
    assert_eq!(failed(&inside).class, ExitClass::Auth);
    let outside = format!("openai.AuthenticationError: x\n{}", filler(TAIL_MAX_LINES));
    assert_eq!(failed(&outside).class, ExitClass::Crash);
    assert_eq!(tail_window(&outside).lines().count(), TAIL_MAX_LINES);
}

#[test]
fn window_keeps_the_last_64_kib_on_a_char_boundary() {
    let long_line = "é".repeat(TAIL_MAX_BYTES); // 2 bytes each, one line
    let tail = format!("openai.AuthenticationError: x\n{long_line}\n");
    let window = tail_window(&tail);
    assert!(window.len() <= TAIL_MAX_BYTES);
    assert_eq!(failed(&tail).class, ExitClass::Crash);
    // The cut would land inside an `é`: it moves forward to the next character.
    let odd = format!("{}y", "é".repeat(TAIL_MAX_BYTES));
    assert_eq!(tail_window(&odd).len(), TAIL_MAX_BYTES - 1);
}

#[test]
fn display_names() {
    assert_eq!(ExitClass::Ok.to_string(), "ok");
    assert_eq!(ExitClass::Auth.to_string(), "auth");
    assert_eq!(ExitClass::Config.to_string(), "config");
    assert_eq!(ExitClass::Crash.to_string(), "crash");
    assert_eq!(Termination::Exited(1).to_string(), "status 1");
    assert_eq!(Termination::Signaled(15).to_string(), "signal 15 (SIGTERM)");
    assert_eq!(Termination::Signaled(99).to_string(), "signal 99");
}

#[test]
fn table_regexes_compile() {
    assert_eq!(COMPILED.len(), SIGNATURES.len());
}
