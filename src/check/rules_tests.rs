//! Unit tests of the per-value rules in `rules.rs`.

use super::*;
use crate::check::placeholder::placeholder_kind;
use crate::check::provider::{Family, Host};
use regex::Regex;

const OPENAI: &str = "sk-Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL3nQ7sT9uVwXyA1b2";
const PROJ: &str = "sk-proj-Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL3nQ7sT9uVwXyA1b2_-Ab";
const ANTHROPIC: &str = "sk-ant-api03-Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL3nQ7sT9uVwXyA1b2";
const GOOGLE: &str = "AIzaSyZq8xN3vR7tY2wK5mP9aB4cD6eF1gH0j_-";
const AZURE: &str = "0123456789abcdef0123456789ABCDEF";

fn input<'a>(key: &'a str, value: &'a str) -> ValueInput<'a> {
    ValueInput {
        key,
        value,
        origin: Origin::Dotenv(Quote::None),
        credential: crate::secret::name_looks_secret(key),
        provider: super::super::names::infer_family(key).map(|f| (f, false)),
        host: Host::Unset,
        pattern: None,
        notes: &[],
    }
}

fn codes(inp: &ValueInput<'_>) -> Vec<&'static str> {
    value_hits(inp).iter().map(|h| h.code).collect()
}

fn assert_no_value(hits: &[Hit], value: &str) {
    for h in hits {
        let all = format!("{} {}", h.message, h.hint.clone().unwrap_or_default());
        assert!(!all.contains(value), "value leaked: {all}");
    }
}

#[test]
fn real_looking_keys_pass() {
    assert!(codes(&input("OPENAI_API_KEY", OPENAI)).is_empty());
    assert!(codes(&input("OPENAI_API_KEY", PROJ)).is_empty());
    assert!(codes(&input("ANTHROPIC_API_KEY", ANTHROPIC)).is_empty());
    assert!(codes(&input("GOOGLE_API_KEY", GOOGLE)).is_empty());
    assert!(codes(&input("GEMINI_API_KEY", GOOGLE)).is_empty());
    assert!(codes(&input("AZURE_OPENAI_API_KEY", AZURE)).is_empty());
    assert!(
        codes(&input(
            "MISTRAL_API_KEY",
            "Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL"
        ))
        .is_empty()
    );
    assert!(
        codes(&input(
            "LANGSMITH_API_KEY",
            "lsv2_pt_0123456789abcdef_0123456789"
        ))
        .is_empty()
    );
    assert!(codes(&input("MODEL", "gpt-4o-mini")).is_empty());
}

#[test]
fn empty_and_whitespace_only() {
    assert_eq!(codes(&input("OPENAI_API_KEY", "")), ["empty"]);
    assert_eq!(codes(&input("OPENAI_API_KEY", " \t\n")), ["empty"]);
    let h = value_hits(&input("OPENAI_API_KEY", ""));
    assert!(h[0].message.contains("is set but empty"));
}

#[test]
fn stray_whitespace() {
    let v = format!("{OPENAI}\n");
    let h = value_hits(&input("OPENAI_API_KEY", &v));
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].code, "whitespace");
    assert_eq!(h[0].severity, Severity::Error);
    assert!(h[0].message.contains("ends with a newline (LF)"));
    assert!(h[0].message.contains("httpx refuses the header"));
    assert_no_value(&h, OPENAI);

    let v = format!(" {OPENAI}\r\n");
    let h = value_hits(&input("OPENAI_API_KEY", &v));
    assert!(
        h[0].message.contains(
            "starts with a space and ends with a carriage return (CR) and a newline (LF)"
        ),
        "{h:?}"
    );

    let v = format!("{OPENAI} extra");
    assert_eq!(codes(&input("OPENAI_API_KEY", &v)), ["whitespace"]);
    // A PEM key under a non-provider name may span lines.
    assert!(
        codes(&input(
            "SIGNING_PRIVATE_KEY",
            "-----BEGIN KEY-----\nabc\n-----END KEY-----"
        ))
        .is_empty()
    );
    // Not a credential: only a warning.
    let h = value_hits(&input("MODEL", "gpt-4o "));
    assert_eq!(h[0].severity, Severity::Warning);
}

#[test]
fn control_characters_bom_and_quotes() {
    let v = format!("{OPENAI}\0");
    assert_eq!(codes(&input("OPENAI_API_KEY", &v)), ["control-char"]);
    let v = format!("{OPENAI}\u{200b}");
    assert_eq!(codes(&input("OPENAI_API_KEY", &v)), ["control-char"]);
    let v = format!("\u{feff}{OPENAI}");
    assert_eq!(codes(&input("OPENAI_API_KEY", &v)), ["bom"]);
    for v in [
        format!("\"{OPENAI}\""),
        format!("'{OPENAI}'"),
        format!("`{OPENAI}`"),
    ] {
        let h = value_hits(&input("OPENAI_API_KEY", &v));
        assert_eq!(
            h.iter().map(|h| h.code).collect::<Vec<_>>(),
            ["quotes"],
            "{v}"
        );
        assert_no_value(&h, OPENAI);
    }
    let mut inp = input("OPENAI_API_KEY", "\"sk-abcdefgh\"");
    inp.origin = Origin::ProcessEnv;
    assert!(
        value_hits(&inp)[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("docker run --env-file")
    );
    // A lone quote inside is not "wrapped".
    assert!(codes(&input("DB_PASSWORD", "ab\"cd")).is_empty());
    // Quoted twice: the hint shows the file's pair outside and the leftover pair
    // inside, whichever way round the line has them (issue 15).
    for (outer, value, shown) in [
        (Quote::Double, "'sk-abcdefgh'", "KEY=\"'…'\""),
        (Quote::Single, "\"sk-abcdefgh\"", "KEY='\"…\"'"),
    ] {
        let mut inp = input("OPENAI_API_KEY", value);
        inp.origin = Origin::Dotenv(outer);
        let hint = value_hits(&inp)[0].hint.clone().unwrap();
        assert!(hint.contains(shown), "{outer:?} {value}: {hint}");
    }
}

#[test]
fn placeholders() {
    for v in [
        "sk-...",
        "sk-proj-…",
        "sk-xxxxxxxxxxxxxxxxxxxx",
        "sk-XXXX-XXXX",
        "sk-",
        "your-api-key",
        "your_api_key_here",
        "YOUR_OPENAI_API_KEY",
        "changeme",
        "CHANGE_ME",
        "xxx",
        "xxxxxxxx",
        "<your key>",
        "<OPENAI_API_KEY>",
        "TODO",
        "REPLACE_ME",
        "placeholder",
        "dummy",
        "None",
        "${OPENAI_API_KEY}",
        "$OPENAI_API_KEY",
        "{{ openai_key }}",
        "sk-abc1***wxyz",
        "[redacted:OPENAI_API_KEY]",
        "insert-your-key-here",
        "AKIAIOSFODNN7EXAMPLE",
    ] {
        let h = value_hits(&input("OPENAI_API_KEY", v));
        assert_eq!(h.len(), 1, "{v}: {h:?}");
        assert_eq!(h[0].code, "placeholder", "{v}");
        assert_eq!(h[0].severity, Severity::Error, "{v}");
        // Short ones (`TODO`, `changeme`) are named by the fixed description.
        if v.len() >= 14 {
            assert_no_value(&h, v);
        }
    }
}

#[test]
fn no_placeholder_false_positives() {
    for v in [
        OPENAI,
        PROJ,
        ANTHROPIC,
        GOOGLE,
        AZURE,
        "sk-test-1234",
        "sk-demo-rotated-2",
    ] {
        assert!(placeholder_kind(v).is_none(), "{v}");
    }
    // Random base62/base64url keys: no fragment may appear by chance in practice;
    // spot-check a batch of generated ones.
    let mut rng = fastrand::Rng::with_seed(7);
    let alphabet: Vec<char> = ('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain(['-', '_'])
        .collect();
    for _ in 0..2000 {
        let body: String = (0..48)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        let v = format!("sk-proj-{body}");
        assert!(placeholder_kind(&v).is_none(), "{v}");
    }
    // Not a credential: only the plain placeholders apply, and `dummy` is not one.
    assert!(codes(&input("MODEL", "dummy")).is_empty());
}

#[test]
fn placeholders_in_non_credentials() {
    for (key, v) in [
        ("DATABASE_URL", "changeme"),
        ("DATABASE_URL", "Change Me"),
        ("P2", "<your key>"),
        ("REGION", "<AWS_REGION_HERE>"),
        ("BASE_URL", "<your-base-url>"),
        ("P2", "your-api-key"),
        ("PROJECT_ID", "YOUR_PROJECT_ID"),
        ("ENDPOINT", "insert-your-endpoint-here"),
        ("MODEL", "TODO"),
        ("MODEL", "todo"),
        ("MODEL", "FIXME"),
        ("MODEL", "TBD"),
        ("REGION", "xxx"),
        ("REGION", "XXXX-XXXX"),
        ("ORG", "sk-..."),
        ("ORG", "sk-proj-…"),
        ("ORG", "sk-xxxxxxxx"),
        ("ORG", "..."),
        // Quoted or padded, the value is judged as meant (plus its own finding).
        ("MODEL", "\"TODO\""),
    ] {
        let inp = input(key, v);
        assert!(!inp.credential, "{key} must not look like a credential");
        let h = value_hits(&inp);
        let p: Vec<&Hit> = h.iter().filter(|h| h.code == "placeholder").collect();
        assert_eq!(p.len(), 1, "{key}={v}: {h:?}");
        // Same severity as for a credential.
        assert_eq!(p[0].severity, Severity::Error, "{key}={v}");
        assert!(p[0].message.starts_with(key), "{}", p[0].message);
        assert!(p[0].message.contains("placeholder"), "{}", p[0].message);
        // Never the value (the fixed descriptions name `changeme`, `your-api-key`,
        // `sk-xxxxxxxx` and `TODO` as examples, so check the others).
        let examples = ["changeme", "your-api-key", "sk-xxxxxxxx"];
        if v.len() >= 8 && !examples.contains(&v) {
            assert_no_value(&h, v);
        }
    }
    // `secret = false` on a key whose name looks secret: still checked.
    let mut inp = input("OPENAI_API_KEY", "your-api-key");
    inp.credential = false;
    inp.provider = None;
    assert_eq!(codes(&inp), ["placeholder"]);
}

#[test]
fn no_placeholder_false_positives_in_non_credentials() {
    for (key, v) in [
        ("MODEL", "gpt-4o"),
        ("MODEL", "gpt-4o-mini"),
        ("MODEL", "claude-3-5-sonnet-latest"),
        (
            "DATABASE_URL",
            "postgres://app:s3cret@db.xxx.internal:5432/app",
        ),
        ("CDN_URL", "https://example.com/assets/xxxlarge"),
        ("BASE_URL", "https://api.example.com/v1"),
        ("STATUS_TEXT", "Loading..."),
        ("GREETING", "Your order is ready"),
        ("GREETING", "your turn, player one"),
        ("COLOR", "#ffffff"),
        ("LOG_FORMAT", "none"),
        ("CACHE", "null"),
        ("MODE", "dummy"),
        ("MODE", "example"),
        ("MODE", "placeholder-text-disabled"),
        ("RETRIES", "000"),
        ("SEPARATOR", "---"),
        ("STOP_SEQUENCE", "<eos>"),
        ("STOP_SEQUENCE", "<|im_end|>"),
        ("STOP_SEQUENCE", "<start_of_turn>"),
        ("TEMPLATE", "${HOME}/data"),
        ("TEMPLATE", "{{ question }}"),
        ("TASK_QUEUE", "todo-list"),
        ("KEY_PREFIX", "sk-"),
        ("SIZE", "xl"),
        ("PATH_HINT", "/usr/local/xxx"),
    ] {
        let inp = input(key, v);
        assert!(!inp.credential, "{key} must not look like a credential");
        assert!(
            !codes(&inp).contains(&"placeholder"),
            "{key}={v}: {:?}",
            value_hits(&inp)
        );
    }
}

#[test]
fn placeholder_is_a_warning_for_local_servers() {
    let mut inp = input("OPENAI_API_KEY", "dummy");
    inp.host = Host::Other;
    let h = value_hits(&inp);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].severity, Severity::Warning);
}

#[test]
fn comment_as_value() {
    let h = value_hits(&input("FAL_KEY", "# get one at fal.ai"));
    assert_eq!(h[0].code, "placeholder");
    assert!(h[0].message.contains("starts with `#`"));
    assert!(codes(&input("MODEL", "#ffffff")).is_empty());
}

#[test]
fn provider_shapes_and_mismatches() {
    let h = value_hits(&input("OPENAI_API_KEY", ANTHROPIC));
    assert_eq!(h[0].code, "provider-mismatch");
    assert!(
        h[0].message
            .contains("an Anthropic key (it starts with `sk-ant-`)"),
        "{h:?}"
    );
    assert!(
        h[0].hint
            .as_deref()
            .unwrap()
            .contains("move it to ANTHROPIC_API_KEY")
    );
    assert_no_value(&h, ANTHROPIC);

    assert_eq!(
        codes(&input("ANTHROPIC_API_KEY", OPENAI)),
        ["provider-mismatch"]
    );
    assert_eq!(
        codes(&input("ANTHROPIC_API_KEY", "abcdefghijkl")),
        ["provider-shape"]
    );
    assert_eq!(
        codes(&input("OPENAI_API_KEY", GOOGLE)),
        ["provider-mismatch"]
    );
    assert_eq!(
        codes(&input("OPENAI_API_KEY", AZURE)),
        ["provider-mismatch"]
    );
    assert_eq!(
        codes(&input("OPENAI_API_KEY", "abcdefghijkl")),
        ["provider-shape"]
    );
    assert_eq!(
        codes(&input("GOOGLE_API_KEY", OPENAI)),
        ["provider-mismatch"]
    );
    let h = value_hits(&input("GOOGLE_API_KEY", "AIzaShort"));
    assert_eq!(h[0].code, "provider-shape");
    assert!(h[0].message.contains("this value has 9 characters"));
    assert_eq!(
        codes(&input("AZURE_OPENAI_API_KEY", OPENAI)),
        ["provider-mismatch"]
    );
    assert_eq!(
        codes(&input("GROQ_API_KEY", ANTHROPIC)),
        ["provider-mismatch"]
    );
    // Plain `sk-` is ambiguous (DeepSeek, …): not a mismatch for Mistral.
    assert!(codes(&input("MISTRAL_API_KEY", OPENAI)).is_empty());
}

#[test]
fn base_url_decides_the_expected_shape() {
    let mut inp = input("OPENAI_API_KEY", OPENAI);
    inp.host = Host::Azure;
    let h = value_hits(&inp);
    assert_eq!(h[0].code, "provider-mismatch");
    assert!(h[0].message.contains("Azure OpenAI resource"));
    let mut inp = input("OPENAI_API_KEY", AZURE);
    inp.host = Host::Azure;
    assert!(codes(&inp).is_empty());
    // A gateway or local server: any key goes, unless the provider is explicit.
    let mut inp = input("OPENAI_API_KEY", "or-abcdef0123456789");
    inp.host = Host::Other;
    assert!(codes(&inp).is_empty());
    inp.provider = Some((Family::OpenAi, true));
    assert_eq!(codes(&inp), ["provider-shape"]);
    let mut inp = input("OPENAI_API_KEY", ANTHROPIC);
    inp.host = Host::Anthropic;
    assert!(codes(&inp).is_empty());
}

#[test]
fn pattern_names_the_pattern_not_the_value() {
    let pat = ("^sk-proj-".to_string(), Regex::new("^sk-proj-").unwrap());
    let mut inp = input("OPENAI_API_KEY", OPENAI);
    inp.pattern = Some(&pat);
    let h = value_hits(&inp);
    assert_eq!(h[0].code, "pattern");
    assert!(h[0].message.contains("`^sk-proj-`"));
    assert_no_value(&h, OPENAI);
}

#[test]
fn dotenv_notes() {
    let mut inp = input("OPENAI_API_KEY", "sk-abc#def");
    inp.notes = &[RecordNote::UnquotedHash];
    assert_eq!(codes(&inp), ["unquoted-hash"]);
    let mut inp = input("DB_PASSWORD", "pa$word");
    inp.notes = &[RecordNote::ContainsDollar];
    let h = value_hits(&inp);
    assert_eq!(h[0].code, "dollar");
    assert!(h[0].message.contains("agentsup keeps `$` literally"));
    // Not secret: `$` is nobody's business.
    let mut inp = input("GREETING", "pa$word");
    inp.notes = &[RecordNote::ContainsDollar];
    assert!(codes(&inp).is_empty());
}

#[test]
fn the_hash_hint_quotes_by_what_the_value_holds() {
    let hint = |value: &str| {
        let mut inp = input("A", value);
        inp.notes = &[RecordNote::UnquotedHash];
        let h = value_hits(&inp);
        assert_eq!(h[0].code, "unquoted-hash");
        let hint = h[0].hint.clone().unwrap_or_default();
        assert!(!hint.contains(value), "the hint shows the value: {hint}");
        hint
    };
    assert!(hint("abc#def").contains("(A='…')"));
    // A `'` cannot be inside single quotes: double quotes, nothing to escape.
    let h = hint("it's#x");
    assert!(h.contains(r#"(A="…")"#) && !h.contains("A='"), "{h}");
    assert!(!h.contains("each"), "{h}");
    // Both quotes: double quotes with `\"`; a backslash doubled.
    let h = hint(r##"it's "x"#y"##);
    assert!(
        h.contains(r#"each `"` as `\"`"#) && !h.contains("each `\\`"),
        "{h}"
    );
    let h = hint(r"it's\x#y");
    assert!(
        h.contains(r"each `\` as `\\`") && !h.contains(r#"each `"`"#),
        "{h}"
    );
    assert!(h.contains("Node"), "{h}");
}

#[test]
fn clean_strips_one_layer() {
    assert_eq!(clean(" \"abc\"\n"), "abc");
    assert_eq!(clean("\u{feff}abc"), "abc");
    assert_eq!(clean("\"abc"), "\"abc");
}
