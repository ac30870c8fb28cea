//! End to end with the real SDKs: `agentsup run` supervising the examples'
//! python-openai, node-openai and LangGraph workers (the real `openai` Python and npm
//! packages, langgraph + langchain-openai) against the loopback fake provider of
//! examples/demo, which answers a wrong key exactly as OpenAI does. Each worker starts
//! with a wrong key, its exit must be classified `auth` from the SDK's own output,
//! and after the key in the `dir` source is rotated it must be restarted and succeed,
//! with neither key ever printed. Also: the Docker example's config, checked and run
//! in the image's file layout (no Docker engine needed).
//!
//! These tests need the packages `tests/setup-deps.sh` installs (pip into
//! target/test-venv, `npm ci` in examples/node-openai); `test_venv_python()` runs it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// Patience for steps that start real SDKs: importing openai / langchain costs
/// 1–2 s of CPU each, and three of them share 2 cores with the other tests.
pub(crate) const SDK_PATIENCE: Duration = Duration::from_secs(150);

/// A line to wait for: it starts with `prefix` (a worker's `name.N` label or
/// `agentsup`) and contains every one of `parts`.
pub(crate) struct LineWith {
    pub prefix: String,
    pub parts: Vec<String>,
}

impl LineWith {
    pub(crate) fn new(prefix: &str, parts: &[&str]) -> LineWith {
        LineWith {
            prefix: prefix.to_string(),
            parts: parts.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn matches(&self, line: &str) -> bool {
        line.starts_with(&self.prefix) && self.parts.iter().all(|p| line.contains(p.as_str()))
    }
}

/// Reads lines until each of `what` has matched a line (in any order); panics
/// naming the ones that did not, with the output so far.
pub(crate) fn wait_all(run: &Running, what: &[LineWith], timeout: Duration) {
    let end = Instant::now() + timeout;
    let mut seen = vec![false; what.len()];
    while seen.iter().any(|s| !s) {
        let left = end.saturating_duration_since(Instant::now());
        match run.lines.recv_timeout(left) {
            Ok((_, line)) => {
                for (i, w) in what.iter().enumerate() {
                    seen[i] |= w.matches(&line);
                }
            }
            Err(_) => {
                let missing: Vec<String> = what
                    .iter()
                    .zip(&seen)
                    .filter(|(_, s)| !**s)
                    .map(|(w, _)| format!("{}: {:?}", w.prefix, w.parts))
                    .collect();
                panic!(
                    "within {timeout:?}, no line for: {missing:?}\noutput so far:\n{}",
                    run.output()
                );
            }
        }
    }
}

/// One example worker under test.
struct Sdk {
    /// Worker name in the test's config.
    name: &'static str,
    /// argv
    command: Vec<String>,
    /// A line the SDK itself prints for a rejected key.
    sdk_auth_line: &'static str,
    /// The worker's success line after the rotation.
    success: &'static str,
}

fn sdks() -> Vec<Sdk> {
    let py = test_venv_python().display().to_string();
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node (20 or newer) must be on PATH for the node-openai example"
    );
    let node_modules = repo().join("examples/node-openai/node_modules/openai/package.json");
    assert!(
        node_modules.exists(),
        "{} is missing: tests/setup-deps.sh runs `npm ci` in examples/node-openai",
        node_modules.display()
    );
    let ex = |p: &str| repo().join("examples").join(p).display().to_string();
    vec![
        Sdk {
            name: "py",
            command: vec![py.clone(), ex("python-openai/worker.py")],
            sdk_auth_line: "openai.AuthenticationError: Error code: 401 - Incorrect API key provided",
            success: "python-openai: call 1 answered 'pong'",
        },
        Sdk {
            name: "node",
            command: vec!["node".into(), ex("node-openai/worker.mjs")],
            sdk_auth_line: "AuthenticationError: 401 Incorrect API key provided",
            success: "node-openai: call 1 answered \"pong\"",
        },
        Sdk {
            name: "graph",
            command: vec![py, ex("langgraph/worker.py")],
            sdk_auth_line: "langchain_openai.chat_models.base.OpenAIAuthenticationError: Error code: 401",
            success: "langgraph: call 1 answered 'pong'",
        },
    ]
}

fn toml_array(argv: &[String]) -> String {
    let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

#[test]
fn real_sdks_fail_auth_with_a_wrong_key_and_recover_after_rotation() {
    let sdks = sdks();
    let sb = Sandbox::new();
    let keys = RotationKeys::new();
    let provider_key = sb.write("provider/accepted_key", format!("{}\n", keys.new.value()));
    let secret = sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.old.value()));
    let provider = FakeProvider::openai(&provider_key);

    let mut cfg = format!(
        r#"
[supervisor]
shutdown_timeout = "10s"

[env]
inherit = ["PATH", "HOME", "LANG", "LC_*", "TZ"]
vars = {{ OPENAI_BASE_URL = "{}", CALL_INTERVAL = "1" }}

[[source]]
type = "dir"
path = "secrets"

[keys.OPENAI_API_KEY]
provider = "openai"
"#,
        provider.base_url()
    );
    for s in &sdks {
        cfg.push_str(&format!(
            r#"
[[worker]]
name = "{}"
command = {}
keys = ["OPENAI_API_KEY"]
backoff = {{ initial = "200ms", max = "2s", jitter = 0.0 }}
auth = {{ max_delay = "2s" }}
"#,
            s.name,
            toml_array(&s.command)
        ));
    }
    sb.config(&cfg);

    let mut run = sb.spawn(&["run", "--no-color"]);

    // 1. Every worker's first exit is classified `auth`, from the SDK's own output,
    //    and the key the SDK echoed (masked) is recognised as the injected one.
    let what: Vec<LineWith> = sdks
        .iter()
        .map(|s| {
            let transition = format!("{}.0: running -> backoff", s.name);
            LineWith::new("agentsup", &[&transition, "class auth"])
        })
        .collect();
    wait_all(&run, &what, SDK_PATIENCE);
    let before = run.output();
    for s in &sdks {
        let label = format!("{}.0", s.name);
        assert!(
            before
                .lines()
                .any(|l| l.starts_with(&label) && l.contains(s.sdk_auth_line)),
            "{}: the SDK's own 401 line {:?} is not in the output:\n{before}",
            s.name,
            s.sdk_auth_line
        );
        let transition = before
            .lines()
            .find(|l| {
                l.contains(&format!("{label}: running -> backoff")) && l.contains("class auth")
            })
            .unwrap();
        assert!(
            transition.contains("the key it echoed is the injected OPENAI_API_KEY"),
            "{transition}"
        );
        assert!(
            !before.contains(s.success),
            "{}: succeeded with the wrong key?\n{before}",
            s.name
        );
    }

    // 2. Rotate: the provider accepts the new key (all along); put it in the dir source.
    write_atomically(&secret, &format!("{}\n", keys.new.value()));
    let mut what = vec![LineWith::new("agentsup", &["OPENAI_API_KEY changed"])];
    for s in &sdks {
        what.push(LineWith::new(&format!("{}.0", s.name), &[s.success]));
    }
    wait_all(&run, &what, SDK_PATIENCE);

    // 3. Stop cleanly; no key text anywhere in agentsup's output.
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    keys.assert_absent(&run);
    keys.assert_absent(&("the fake provider's log", provider.log()));
}

#[test]
fn example_configs_pass_check() {
    for ex in ["python-openai", "node-openai", "langgraph"] {
        let cfg = repo().join("examples").join(ex).join("supervisor.toml");
        let sb = Sandbox::new();
        let out = sb.run(&["check", "-c", cfg.to_str().unwrap()]);
        assert_eq!(
            out.code,
            Some(0),
            "{ex}: agentsup check failed:\n{}",
            out.all()
        );
    }
}

/// `(source, destination)` for every source of every `COPY` from the build context
/// in the Dockerfile (not `COPY --from=…`), continuation lines joined.
fn dockerfile_copies(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().skip(1).collect();
            let (dst, srcs) = parts.split_last().expect("COPY without arguments");
            srcs.iter()
                .map(|s| (s.to_string(), dst.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn docker_file(name: &str) -> String {
    std::fs::read_to_string(repo().join("examples/docker").join(name)).unwrap()
}

#[test]
fn dockerfile_copies_existing_files_and_runs_agentsup_as_entrypoint() {
    let df = docker_file("Dockerfile");
    let copies = dockerfile_copies(&df);
    assert!(copies.len() >= 6, "{copies:?}");
    for (src, _) in &copies {
        let p = repo().join(src);
        assert!(p.exists(), "Dockerfile copies {src}, which does not exist");
    }
    assert!(
        copies.contains(&(
            "examples/docker/supervisor.toml".into(),
            "/app/supervisor.toml".into()
        )),
        "{copies:?}"
    );
    // The image ships the build the benchmarks measure.
    assert!(df.contains("scripts/build-dist.sh"), "{df}");
    assert!(
        df.contains(r#"ENTRYPOINT ["agentsup", "run", "-c", "/app/supervisor.toml"]"#),
        "{df}"
    );
    // compose.yaml parses, builds this Dockerfile, and gives `agents` the secret as
    // /run/secrets/OPENAI_API_KEY from a file that exists.
    let compose = crate::k8s_tests::yaml_docs(&repo().join("examples/docker/compose.yaml"));
    let compose = &compose[0];
    let agents = &compose["services"]["agents"];
    assert_eq!(agents["build"]["dockerfile"], "examples/docker/Dockerfile");
    assert_eq!(agents["build"]["context"], "../..");
    let secret = &agents["secrets"][0];
    assert_eq!(secret["target"], "OPENAI_API_KEY", "{compose}");
    let file = compose["secrets"][secret["source"].as_str().unwrap()]["file"]
        .as_str()
        .expect("secret file");
    assert!(
        repo().join("examples/docker").join(file).is_file(),
        "{file}"
    );
}

/// The image's /app laid out from the Dockerfile's `COPY`s into `sb/app`, with the
/// config's `/run/secrets` pointed at `sb/run/secrets` (holding compose.yaml's
/// secret file) and its health address at `health`.
fn image_layout(sb: &Sandbox, health: &str) -> PathBuf {
    for (src, dst) in dockerfile_copies(&docker_file("Dockerfile")) {
        if let Some(rel) = dst.strip_prefix("/app/") {
            let to = sb.path().join("app").join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo().join(&src), &to).unwrap();
        }
    }
    let cfg_path = sb.path().join("app/supervisor.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(cfg.contains("path = \"/run/secrets\""), "{cfg}");
    assert!(cfg.contains("health = \"0.0.0.0:9464\""), "{cfg}");
    let secrets = sb.path().join("run/secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::copy(
        repo().join("examples/docker/secrets/OPENAI_API_KEY"),
        secrets.join("OPENAI_API_KEY"),
    )
    .unwrap();
    let cfg = cfg
        .replace(
            "path = \"/run/secrets\"",
            &format!("path = {:?}", secrets.display().to_string()),
        )
        .replace("health = \"0.0.0.0:9464\"", &format!("health = {health:?}"));
    std::fs::write(&cfg_path, cfg).unwrap();
    cfg_path
}

#[test]
fn docker_config_passes_check_with_run_secrets_and_fails_without_the_key() {
    let sb = Sandbox::new();
    let cfg = image_layout(&sb, "127.0.0.1:9464");
    let cfg = cfg.to_str().unwrap();
    sb.run(&["check", "-c", cfg]).assert_code(0);
    std::fs::remove_file(sb.path().join("run/secrets/OPENAI_API_KEY")).unwrap();
    sb.run(&["check", "-c", cfg])
        .assert_code(78)
        .assert_contains("OPENAI_API_KEY");
}

/// What `docker compose up` does, without Docker: the image's files and config, the
/// compose secret as /run/secrets/OPENAI_API_KEY, OPENAI_BASE_URL from the
/// container environment, the fake provider accepting that same secret file.
#[test]
fn docker_image_layout_runs_the_worker_and_serves_readyz() {
    let py = test_venv_python();
    let sb = Sandbox::new();
    // The provider reads its key file per request; image_layout writes it.
    let provider = FakeProvider::openai(&sb.path().join("run/secrets/OPENAI_API_KEY"));
    let (mut run, port) = spawn_with_health_port(|port| {
        let cfg = image_layout(&sb, &format!("127.0.0.1:{port}"));
        let mut c = sb.cmd(&["run", "--no-color", "-c", cfg.to_str().unwrap()]);
        // The image's PATH finds the python holding the requirements first.
        c.env(
            "PATH",
            format!(
                "{}:{}",
                py.parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("OPENAI_BASE_URL", provider.base_url())
        .current_dir(sb.path().join("app"));
        sb.spawn_cmd(c)
    });
    run.wait_for("python-openai: call 1 answered 'pong'", SDK_PATIENCE);
    assert!(
        wait_until(PATIENCE, || http_status(port, "/readyz") == Some(200)),
        "/readyz never answered 200\n{}",
        run.output()
    );
    assert_eq!(http_status(port, "/healthz"), Some(200));
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    let key =
        std::fs::read_to_string(repo().join("examples/docker/secrets/OPENAI_API_KEY")).unwrap();
    // The example's own secret, not one this test chooses.
    Canary::of_fixed(key.trim()).assert_absent(&run);
}
