//! `agentsup check` (SPEC 4): one test per check, each writing a real config and
//! real sources in a sandbox, running the real binary, and asserting the exit code
//! (78 with errors, 0 with warnings only), the finding, and that no secret value
//! appears anywhere in the output.

use crate::support::*;

/// A 32-hex-digit Azure key: its shape is the subject of the Azure tests, so it
/// cannot hold a canary's punctuation; leak-checked as [`Canary::of_fixed`].
const FAKE_AZURE_KEY: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a0";

/// A fresh OpenAI-shaped (legacy `sk-`) canary.
fn openai_key() -> Canary {
    Canary::new("sk-")
}

/// A fresh Anthropic-shaped canary.
fn anthropic_key() -> Canary {
    Canary::new("sk-ant-api03-")
}

fn azure_key() -> Canary {
    Canary::of_fixed(FAKE_AZURE_KEY)
}

/// A one-worker config over the default sources (`.env`, then process env).
fn one_worker(keys: &str) -> String {
    format!(
        "[[worker]]\nname = \"planner\"\ncommand = [\"python3\", \"-c\", \"pass\"]\nkeys = [{keys}]\n"
    )
}

/// Runs `check` and `check --format json`, asserts both exit with `code`, that
/// neither leaks any of `secrets`, and returns the text run and the parsed JSON.
fn check_both(sb: &Sandbox, code: i32, secrets: &[&Canary]) -> (Output, serde_json::Value) {
    let text = sb.run(&["check"]);
    text.assert_code(code);
    let json = sb.run(&["check", "--format", "json"]);
    json.assert_code(code);
    for s in secrets {
        text.assert_no_leak(s);
        json.assert_no_leak(s);
    }
    assert!(!text.all().contains("panicked"), "{}", text.all());
    let doc: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("check --format json is not JSON ({e}):\n{}", json.stdout));
    (text, doc)
}

/// The `code`s of the JSON findings, in report order.
fn codes(doc: &serde_json::Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

/// The first JSON finding with `code`.
fn finding<'a>(doc: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no {code:?} finding in {doc:#}"))
}

#[test]
fn near_miss_name_is_suggested_with_its_line() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    sb.write(
        ".env",
        format!("# keys for the planner\nOPEN_AI_API_KEY='{ok}'\n"),
    );
    sb.config(&one_worker("\"OPENAI_API_KEY\""));
    let (out, doc) = check_both(&sb, 78, &[&okey]);
    out.assert_contains("error    OPENAI_API_KEY  (worker planner)")
        .assert_contains("OPENAI_API_KEY is not set by any source")
        .assert_contains("did you mean OPEN_AI_API_KEY at .env:2? rename it to OPENAI_API_KEY")
        .assert_contains("1 error, 0 warnings; 1 key checked for 1 worker");
    assert_eq!(codes(&doc), ["missing"]);
    let f = finding(&doc, "missing");
    assert_eq!(f["key"], "OPENAI_API_KEY");
    assert_eq!(f["workers"], serde_json::json!(["planner"]));
    assert_eq!(f["severity"], "error");
    assert_eq!(doc["errors"], 1);
}

#[test]
fn healthy_config_passes_with_a_readable_report() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    sb.write(
        ".env",
        format!("OPENAI_API_KEY='{ok}'\nMODEL=gpt-4o-mini\n"),
    );
    sb.config(&one_worker("\"OPENAI_API_KEY\", \"MODEL\""));
    let (out, doc) = check_both(&sb, 0, &[&okey]);
    out.assert_contains("agentsup check: supervisor.toml")
        .assert_contains("1. dotenv .env")
        .assert_contains("2 values")
        .assert_contains("2. process env")
        .assert_contains("planner  2 keys: OPENAI_API_KEY, MODEL")
        .assert_contains("0 errors, 0 warnings; 2 keys checked for 1 worker")
        .assert_contains("ok: every required key is present and well-formed");
    // Not a terminal: no colour codes.
    assert!(!out.stdout.contains('\u{1b}'), "{}", out.stdout);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["warnings"], 0);
    assert_eq!(doc["keys_checked"], 2);
    assert_eq!(doc["config"], "supervisor.toml");
    assert_eq!(doc["sources"][0]["description"], "dotenv .env");
    assert_eq!(doc["sources"][0]["status"], "loaded");
    assert_eq!(doc["sources"][0]["count"], 2);
    assert_eq!(doc["findings"], serde_json::json!([]));
}

#[test]
fn missing_key_names_the_sources_searched() {
    let sb = Sandbox::new();
    sb.write(".env", "MODEL=gpt-4o-mini\n");
    sb.config(&one_worker("\"ANTHROPIC_API_KEY\""));
    let (out, doc) = check_both(&sb, 78, &[]);
    out.assert_contains("ANTHROPIC_API_KEY is not set by any source")
        .assert_contains("set ANTHROPIC_API_KEY in one of the sources (dotenv .env, process env)");
    assert_eq!(codes(&doc), ["missing"]);
    assert_eq!(
        finding(&doc, "missing")["location"],
        serde_json::Value::Null
    );
}

#[test]
fn empty_and_whitespace_only_values() {
    let sb = Sandbox::new();
    sb.write(".env", "OPENAI_API_KEY=\nANTHROPIC_API_KEY=\"   \"\n");
    sb.config(&one_worker("\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\""));
    let (out, doc) = check_both(&sb, 78, &[]);
    out.assert_contains("OPENAI_API_KEY is set but empty")
        .assert_contains("ANTHROPIC_API_KEY holds only whitespace");
    assert_eq!(codes(&doc), ["empty", "empty"]);
    assert_eq!(finding(&doc, "empty")["location"], ".env:1");
}

#[test]
fn trailing_newline_in_a_secret_file() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    // `echo` plus an editor's extra line: agentsup strips one newline, not two.
    sb.write("secrets/OPENAI_API_KEY", format!("{ok}\n\n"));
    sb.config(&format!(
        "[[source]]\ntype = \"dir\"\npath = \"secrets\"\n{}",
        one_worker("\"OPENAI_API_KEY\"")
    ));
    let (out, doc) = check_both(&sb, 78, &[&okey]);
    out.assert_contains("OPENAI_API_KEY ends with a newline (LF)")
        .assert_contains("httpx refuses the header")
        .assert_contains("Python SDKs report that as a connection error")
        .assert_contains("printf '%s'");
    assert_eq!(codes(&doc), ["whitespace"]);
    let loc = finding(&doc, "whitespace")["location"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(loc.ends_with("secrets/OPENAI_API_KEY"), "{loc}");
}

#[test]
fn carriage_return_and_spaces_from_the_environment_and_quoted_dotenv() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    let akey = anthropic_key();
    sb.write(
        ".env",
        format!(
            "ANTHROPIC_API_KEY=\" {}\"\n",
            akey.dotenv_double_quoted_inner()
        ),
    );
    sb.config(&one_worker("\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\""));
    let value = format!("{ok}\r");
    let out = sb.run_env(&["check"], &[("OPENAI_API_KEY", &value)]);
    out.assert_code(78)
        .assert_no_leak(&okey)
        .assert_no_leak(&akey)
        .assert_contains("OPENAI_API_KEY ends with a carriage return (CR)")
        .assert_contains("Kubernetes `stringData`")
        .assert_contains("ANTHROPIC_API_KEY starts with a space")
        .assert_contains("quoted values keep their spaces");
}

#[test]
fn control_characters_in_a_secret_file() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    let akey = anthropic_key();
    let ak = akey.value();
    sb.write("secrets/OPENAI_API_KEY", format!("{ok}\u{7}"));
    sb.write("secrets/ANTHROPIC_API_KEY", format!("{ak}\0"));
    sb.config(&format!(
        "[[source]]\ntype = \"dir\"\npath = \"secrets\"\n{}",
        one_worker("\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\"")
    ));
    let (out, doc) = check_both(&sb, 78, &[&okey, &akey]);
    out.assert_contains("OPENAI_API_KEY contains a control character")
        .assert_contains("ANTHROPIC_API_KEY contains a NUL byte");
    assert_eq!(codes(&doc), ["control-char", "control-char"]);
}

#[test]
fn byte_order_mark_in_a_secret_file() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    sb.write("secrets/OPENAI_API_KEY", format!("\u{feff}{ok}\n"));
    sb.config(&format!(
        "[[source]]\ntype = \"dir\"\npath = \"secrets\"\n{}",
        one_worker("\"OPENAI_API_KEY\"")
    ));
    let (out, doc) = check_both(&sb, 78, &[&okey]);
    out.assert_contains("OPENAI_API_KEY contains a byte-order mark (U+FEFF) at the start")
        .assert_contains("save the file as UTF-8 without BOM");
    assert_eq!(codes(&doc), ["bom"]);
}

#[test]
fn quotes_kept_as_part_of_the_value() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    let akey = anthropic_key();
    let ak = akey.value();
    // A dir file written with quotes, and `docker run --env-file` style quotes in
    // agentsup's own environment.
    sb.write("secrets/ANTHROPIC_API_KEY", format!("'{ak}'\n"));
    sb.config(&format!(
        "[[source]]\ntype = \"dir\"\npath = \"secrets\"\n[[source]]\ntype = \"env\"\n{}",
        one_worker("\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\"")
    ));
    let quoted = format!("\"{ok}\"");
    let out = sb.run_env(
        &["check", "--format", "json"],
        &[("OPENAI_API_KEY", &quoted)],
    );
    out.assert_code(78)
        .assert_no_leak(&okey)
        .assert_no_leak(&akey);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(codes(&doc), ["quotes", "quotes"], "{doc:#}");
    let text = sb.run_env(&["check"], &[("OPENAI_API_KEY", &quoted)]);
    text.assert_code(78)
        .assert_no_leak(&okey)
        .assert_contains("OPENAI_API_KEY is wrapped in double quotes that are part of the value")
        .assert_contains("docker run --env-file")
        .assert_contains("ANTHROPIC_API_KEY is wrapped in single quotes")
        .assert_contains("the secret holds the quotes");
}

#[test]
fn placeholders_are_errors() {
    let sb = Sandbox::new();
    sb.write(
        ".env",
        "OPENAI_API_KEY=sk-...\n\
         ANTHROPIC_API_KEY=your-api-key\n\
         GOOGLE_API_KEY=changeme\n\
         MISTRAL_API_KEY=<your mistral key>\n\
         GROQ_API_KEY=TODO\n\
         SERPER_API_KEY=sk-xxxxxxxxxxxxxxxx\n\
         FAL_KEY=#get-one-at-fal.ai\n",
    );
    sb.config(&one_worker(
        "\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\", \"GOOGLE_API_KEY\", \"MISTRAL_API_KEY\", \
         \"GROQ_API_KEY\", \"SERPER_API_KEY\", \"FAL_KEY\"",
    ));
    let (out, doc) = check_both(
        &sb,
        78,
        &[
            &Canary::of_fixed("sk-xxxxxxxxxxxxxxxx"),
            &Canary::of_fixed("<your mistral key>"),
            &Canary::of_fixed("#get-one-at-fal.ai"),
        ],
    );
    assert_eq!(codes(&doc), ["placeholder"; 7], "{doc:#}");
    assert_eq!(doc["errors"], 7);
    out.assert_contains("OPENAI_API_KEY holds a placeholder, not a real value: it looks like an example key with `...` in it")
        .assert_contains("SERPER_API_KEY holds a placeholder")
        .assert_contains("FAL_KEY starts with `#`");
    // A placeholder is reported once, not again as a bad provider shape.
    assert!(!out.stdout.contains("does not look like"), "{}", out.stdout);
}

#[test]
fn a_key_of_one_provider_under_another_providers_name() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    let akey = anthropic_key();
    let ak = akey.value();
    sb.write(
        ".env",
        format!("OPENAI_API_KEY='{ak}'\nANTHROPIC_API_KEY='{ok}'\n"),
    );
    sb.config(&one_worker("\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\""));
    let (out, doc) = check_both(&sb, 78, &[&okey, &akey]);
    out.assert_contains(
        "OPENAI_API_KEY holds what looks like an Anthropic key (it starts with `sk-ant-`)",
    )
    .assert_contains("move it to ANTHROPIC_API_KEY")
    .assert_contains(
        "ANTHROPIC_API_KEY holds what looks like an OpenAI key (it starts with `sk-`)",
    );
    assert_eq!(codes(&doc), ["provider-mismatch", "provider-mismatch"]);
}

#[test]
fn provider_shape_from_name_and_from_keys_table() {
    let sb = Sandbox::new();
    let short_google = "AIzaSyTooShort0123";
    sb.write(
        ".env",
        format!("GEMINI_API_KEY={short_google}\nLLM_KEY=not-an-openai-key-0123\n"),
    );
    sb.config(&format!(
        "[keys.LLM_KEY]\nprovider = \"openai\"\n{}",
        one_worker("\"GEMINI_API_KEY\", \"LLM_KEY\"")
    ));
    let (out, doc) = check_both(
        &sb,
        78,
        &[
            &Canary::of_fixed(short_google),
            &Canary::of_fixed("not-an-openai-key-0123"),
        ],
    );
    out.assert_contains("GEMINI_API_KEY does not look like a Google API key")
        .assert_contains("(39 characters in all), and this value has 18 characters")
        .assert_contains(
            "LLM_KEY does not look like an OpenAI key (`sk-…`): OpenAI keys start with `sk-`",
        )
        .assert_contains("set `[keys.LLM_KEY] provider = \"none\"`");
    assert_eq!(codes(&doc), ["provider-shape", "provider-shape"]);
}

#[test]
fn azure_needs_an_https_endpoint_and_an_api_version() {
    let sb = Sandbox::new();
    let zkey = azure_key();
    // The resource name, never echoed (letters and digits: it is a host name).
    let res = Canary::alnum("res");
    let r = res.value();
    sb.write(".env", format!("AZURE_OPENAI_API_KEY={FAKE_AZURE_KEY}\nAZURE_OPENAI_ENDPOINT=https://{r}.openai.azure.com\n"));
    sb.config(&one_worker("\"AZURE_OPENAI_API_KEY\""));
    let (out, doc) = check_both(&sb, 78, &[&zkey]);
    assert_eq!(
        codes(&doc),
        ["azure-endpoint", "azure-api-version"],
        "{doc:#}"
    );
    out.assert_contains(
        "AZURE_OPENAI_ENDPOINT is set at .env:2, but worker planner does not declare it",
    )
    .assert_contains("OPENAI_API_VERSION is not in worker planner's environment");

    // Declared, but plain http; the API version comes from the worker's vars.
    sb.write(".env", format!("AZURE_OPENAI_API_KEY={FAKE_AZURE_KEY}\nAZURE_OPENAI_ENDPOINT=http://{r}.openai.azure.com\n"));
    sb.config(&format!(
        "{}vars = {{ OPENAI_API_VERSION = \"2024-10-21\" }}\n",
        one_worker("\"AZURE_OPENAI_API_KEY\", \"AZURE_OPENAI_ENDPOINT\"")
    ));
    let (out, doc) = check_both(&sb, 78, &[&zkey, &res]);
    assert_eq!(codes(&doc), ["azure-endpoint"]);
    assert_eq!(finding(&doc, "azure-endpoint")["location"], ".env:2");
    out.assert_contains("AZURE_OPENAI_ENDPOINT is not an https:// URL");

    // Fixed: nothing to report.
    sb.write(".env", format!("AZURE_OPENAI_API_KEY={FAKE_AZURE_KEY}\nAZURE_OPENAI_ENDPOINT=https://{r}.openai.azure.com\n"));
    check_both(&sb, 0, &[&zkey]);
}

#[test]
fn openai_key_sent_to_an_azure_endpoint() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    let res = Canary::alnum("res");
    let r = res.value();
    let zkey = azure_key();
    sb.write(
        ".env",
        format!("OPENAI_API_KEY='{ok}'\nOPENAI_BASE_URL=https://{r}.openai.azure.com/openai\n"),
    );
    sb.config(&one_worker("\"OPENAI_API_KEY\", \"OPENAI_BASE_URL\""));
    let (out, doc) = check_both(&sb, 78, &[&okey, &res]);
    assert_eq!(codes(&doc), ["provider-mismatch"]);
    out.assert_contains("OPENAI_BASE_URL points at an Azure OpenAI resource")
        .assert_contains("Access denied due to invalid subscription key or wrong API endpoint");

    // The reverse: an Azure key with OpenAI's own endpoint.
    sb.write(".env", format!("OPENAI_API_KEY={FAKE_AZURE_KEY}\n"));
    sb.config(&one_worker("\"OPENAI_API_KEY\""));
    let (out, _) = check_both(&sb, 78, &[&zkey]);
    out.assert_contains("looks like an Azure OpenAI key (32 hexadecimal characters)");
}

#[test]
fn pattern_rule_names_the_pattern_not_the_value() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    sb.write(".env", format!("OPENAI_API_KEY='{ok}'\n"));
    sb.config(&format!(
        "[keys.OPENAI_API_KEY]\npattern = \"^sk-proj-\"\n{}",
        one_worker("\"OPENAI_API_KEY\"")
    ));
    let (out, doc) = check_both(&sb, 78, &[&okey]);
    assert_eq!(codes(&doc), ["pattern"]);
    out.assert_contains(
        "OPENAI_API_KEY does not match its pattern `^sk-proj-` from [keys.OPENAI_API_KEY]",
    );
}

#[test]
fn unquoted_hash_and_dollar_are_warnings_only() {
    let sb = Sandbox::new();
    let password = "pa$w0rd#2024";
    sb.write(".env", format!("DB_PASSWORD={password}\n"));
    sb.config(&one_worker("\"DB_PASSWORD\""));
    let (out, doc) = check_both(&sb, 0, &[&Canary::of_fixed(password)]);
    assert_eq!(codes(&doc), ["unquoted-hash", "dollar"]);
    assert_eq!(doc["warnings"], 2);
    out.assert_contains("Node's dotenv and dotenvx cut it at the `#`")
        .assert_contains(
            "agentsup keeps `$` literally; docker compose and dotenv-expand would interpolate it",
        )
        .assert_contains("0 errors, 2 warnings")
        .assert_contains("ok: nothing blocks `agentsup run`");
}

#[test]
fn declared_name_no_sdk_reads() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    sb.write(".env", format!("OPENAI_KEY='{ok}'\n"));
    sb.config(&one_worker("\"OPENAI_KEY\""));
    let (out, doc) = check_both(&sb, 0, &[&okey]);
    assert_eq!(codes(&doc), ["near-miss"]);
    assert_eq!(finding(&doc, "near-miss")["severity"], "warning");
    out.assert_contains(
        "OPENAI_KEY is not a name any SDK reads: the openai SDK reads OPENAI_API_KEY",
    );
}

#[test]
fn worker_cwd_with_its_own_dotenv() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    sb.write(".env", format!("OPENAI_API_KEY='{ok}'\n"));
    sb.write(
        "agents/.env",
        "OPENAI_API_KEY=sk-stale-key-from-last-year\n",
    );
    sb.config(&format!(
        "{}cwd = \"agents\"\n",
        one_worker("\"OPENAI_API_KEY\"")
    ));
    let (out, doc) = check_both(
        &sb,
        0,
        &[&okey, &Canary::of_fixed("sk-stale-key-from-last-year")],
    );
    assert_eq!(codes(&doc), ["worker-dotenv"]);
    assert_eq!(finding(&doc, "worker-dotenv")["location"], "agents/.env");
    out.assert_contains(
        "worker planner's working directory holds a .env that is not one of agentsup's sources",
    )
    .assert_contains("agentsup sets PYTHON_DOTENV_DISABLED=1 in this worker");

    sb.config(&format!(
        "[env]\nworker_dotenv = true\n{}cwd = \"agents\"\n",
        one_worker("\"OPENAI_API_KEY\"")
    ));
    let (out, _) = check_both(&sb, 0, &[&okey]);
    out.assert_contains("worker_dotenv = true");
}

#[test]
fn malformed_dotenv_is_one_located_error() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    sb.write(
        ".env",
        format!("OPENAI_API_KEY='{ok}'\nthis line is not a record\nMODEL=a\nMODEL=b\n"),
    );
    sb.config(&one_worker("\"OPENAI_API_KEY\""));
    let (out, doc) = check_both(&sb, 78, &[&okey]);
    assert_eq!(doc["errors"], 1, "{doc:#}");
    assert_eq!(codes(&doc), ["source", "duplicate"]);
    assert_eq!(finding(&doc, "source")["location"], ".env:2");
    out.assert_contains("error    .env:2")
        .assert_contains("no `=`");
}

#[test]
fn required_source_that_cannot_be_read() {
    let sb = Sandbox::new();
    sb.config(&format!(
        "[[source]]\ntype = \"dotenv\"\npath = \"prod.env\"\n{}",
        one_worker("\"OPENAI_API_KEY\"")
    ));
    let (out, doc) = check_both(&sb, 78, &[]);
    assert_eq!(codes(&doc), ["source", "missing"]);
    assert_eq!(doc["sources"][0]["status"], "failed");
    out.assert_contains("cannot read dotenv file")
        .assert_contains("failed");
}

/// Runs `check -c FILE` on a broken config: exit 78, one error line naming
/// file:line:col, no panic.
fn assert_config_error(toml: &str, located: &str, words: &str) {
    let sb = Sandbox::new();
    sb.config(toml);
    let out = sb.run(&["check"]);
    out.assert_code(78)
        .assert_contains(located)
        .assert_contains(words);
    assert!(!out.all().contains("panicked"), "{}", out.all());
    let errors = out.stderr.lines().filter(|l| l.contains("error")).count();
    assert_eq!(
        errors, 1,
        "expected exactly one error line:\n{}",
        out.stderr
    );
}

#[test]
fn malformed_config_wrong_type() {
    assert_config_error(
        "[[worker]]\nname = \"a\"\ncommand = \"python3 -m agent\"\n",
        "supervisor.toml:3:11",
        "`command` in `[[worker]]`: expected an array, found a string",
    );
}

#[test]
fn malformed_config_unknown_field() {
    assert_config_error(
        "[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nreplica = 2\n",
        "supervisor.toml:4:1",
        "unknown field `replica`",
    );
}

#[test]
fn malformed_config_bad_duration() {
    assert_config_error(
        "[supervisor]\nshutdown_timeout = \"10 parsecs\"\n[[worker]]\nname = \"a\"\ncommand = [\"x\"]\n",
        "supervisor.toml:2:20",
        "invalid duration",
    );
}

#[test]
fn exec_refuses_to_start_on_check_errors() {
    let sb = Sandbox::new();
    let okey = openai_key();
    let ok = okey.value();
    sb.write(".env", format!("OPEN_AI_API_KEY='{ok}'\n"));
    sb.config(&one_worker("\"OPENAI_API_KEY\""));
    let out = sb.run(&[
        "exec",
        "--worker",
        "planner",
        "--",
        "sh",
        "-c",
        "echo started",
    ]);
    out.assert_code(78)
        .assert_no_leak(&okey)
        .assert_contains("OPENAI_API_KEY is not set by any source");
    assert!(!out.stdout.contains("started"), "{}", out.stdout);
}
