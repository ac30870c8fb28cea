//! examples/kubernetes: the manifests validate against the Kubernetes schemas
//! (offline, `kubernetes-validate` from target/test-venv), agree with the config in
//! their ConfigMap and with what the README promises (Secret as a directory, never
//! subPath or secretKeyRef; probes on the health port; grace period above
//! shutdown_timeout), and the ConfigMap's own supervisor.toml recovers from a key
//! rotation delivered the way the kubelet delivers it: an atomic `..data` symlink
//! swap in the Secret volume.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn k8s_dir() -> PathBuf {
    repo().join("examples/kubernetes")
}

/// Every manifest in examples/kubernetes (what `kubectl apply -f` picks up).
fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    v.sort();
    v
}

fn venv_bin(name: &str) -> PathBuf {
    test_venv_python().parent().unwrap().join(name)
}

/// Whether `unshare` can give a command a network namespace of its own (no
/// network at all): root, or unprivileged user namespaces.
fn can_cut_network() -> bool {
    Command::new("unshare")
        .args(["--map-root-user", "--net", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `kubernetes-validate` with no network at all (a fresh network namespace),
/// proving the schemas ship with the package.
fn kubernetes_validate(args: &[&str], files: &[PathBuf]) -> Output {
    let validator = venv_bin("kubernetes-validate");
    let mut c = if can_cut_network() {
        let mut c = Command::new("unshare");
        c.args(["--map-root-user", "--net"]).arg(validator);
        c
    } else {
        eprintln!(
            "note: unshare cannot create a network namespace here; validating with the network up"
        );
        Command::new(validator)
    };
    c.args(args)
        .args(files)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    Sandbox::new().run_cmd(c)
}

/// Every YAML document of `path`, as JSON (PyYAML from the test venv).
pub(crate) fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new(test_venv_python())
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one document of kind `kind` across the manifests.
fn resource(kind: &str) -> Value {
    let all: Vec<Value> = manifests()
        .iter()
        .flat_map(|p| yaml_docs(p))
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(all.len(), 1, "expected one {kind} in examples/kubernetes");
    all.into_iter().next().unwrap()
}

fn configmap_toml() -> String {
    resource("ConfigMap")["data"]["supervisor.toml"]
        .as_str()
        .expect("ConfigMap data supervisor.toml")
        .to_string()
}

/// `text` with `from` replaced by `to`; panics if `from` is not there, so a test
/// never silently runs something other than the shipped config.
fn subst(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not found in:\n{text}");
    text.replace(from, to)
}

fn seconds(duration: &str) -> u64 {
    duration
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected a duration like \"25s\", got {duration:?}"))
}

#[test]
fn manifests_validate_against_kubernetes_schemas_offline() {
    let files = manifests();
    let kinds: Vec<String> = files
        .iter()
        .flat_map(|p| yaml_docs(p))
        .map(|d| d["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    for kind in ["Deployment", "Secret", "ConfigMap"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}: {kinds:?}");
    }
    // The newest schemas the pinned package ships, and an older still-common release.
    for version in ["1.37.0", "1.30.0"] {
        kubernetes_validate(&["--strict", "-k", version], &files).assert_code(0);
    }
    // The validator really validates: a wrong type is rejected.
    let sb = Sandbox::new();
    let deployment = std::fs::read_to_string(k8s_dir().join("deployment.yaml")).unwrap();
    let broken = sb.write(
        "deployment.yaml",
        subst(
            &deployment,
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds: thirty",
        ),
    );
    let out = kubernetes_validate(&["--strict"], &[broken]);
    assert_ne!(out.code, Some(0), "{}", out.all());
    out.assert_contains("terminationGracePeriodSeconds");
}

#[test]
fn deployment_matches_its_configmap_and_mounts_the_secret_as_a_directory() {
    let deployment = resource("Deployment");
    let secret = resource("Secret");
    let configmap = resource("ConfigMap");
    let cfg: toml::Table = configmap_toml().parse().unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    let volume_of = |pred: &dyn Fn(&Value) -> bool| -> String {
        volumes
            .iter()
            .find(|v| pred(v))
            .and_then(|v| v["name"].as_str())
            .expect("volume")
            .to_string()
    };
    let secret_volume = volume_of(&|v| v["secret"]["secretName"] == secret["metadata"]["name"]);
    let config_volume = volume_of(&|v| v["configMap"]["name"] == configmap["metadata"]["name"]);

    let containers = pod["containers"].as_array().unwrap();
    let agentsup = containers
        .iter()
        .find(|c| c["command"][0] == "agentsup")
        .expect("a container running agentsup");
    for c in containers {
        // Environment variables from a Secret never change in a running pod.
        for e in c["env"].as_array().into_iter().flatten() {
            assert!(
                e["valueFrom"]["secretKeyRef"].is_null(),
                "{}: env from secretKeyRef cannot be rotated: {e}",
                c["name"]
            );
        }
        // A subPath mount never receives Secret updates.
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            if m["name"] == secret_volume.as_str() {
                assert!(
                    m["subPath"].is_null(),
                    "{}: subPath on the Secret",
                    c["name"]
                );
            }
        }
    }
    let mount_of = |name: &str| -> String {
        agentsup["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("agentsup container does not mount {name}"))
            .to_string()
    };

    // agentsup reads the ConfigMap's file and the Secret volume as its dir source.
    let config_dir = mount_of(&config_volume);
    assert_eq!(
        agentsup["command"],
        serde_json::json!([
            "agentsup",
            "run",
            "-c",
            format!("{config_dir}/supervisor.toml")
        ])
    );
    let dir_sources: Vec<&str> = cfg["source"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"].as_str() == Some("dir"))
        .filter_map(|s| s["path"].as_str())
        .collect();
    assert_eq!(dir_sources, vec![mount_of(&secret_volume).as_str()]);
    assert_eq!(mount_of(&secret_volume), "/run/secrets/agents");

    // Every key a worker declares is in the Secret.
    for w in cfg["worker"].as_array().unwrap() {
        for k in w["keys"].as_array().unwrap() {
            let k = k.as_str().unwrap();
            assert!(
                !secret["stringData"][k].is_null() || !secret["data"][k].is_null(),
                "worker key {k} is not in the Secret"
            );
        }
    }

    // Probes on the health port: readiness /readyz, liveness /healthz.
    let health = cfg["supervisor"]["health"].as_str().unwrap();
    let port: u64 = health.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        health.starts_with("0.0.0.0:"),
        "{health}: kubelet probes the pod IP"
    );
    let port_name = agentsup["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"] == port)
        .and_then(|p| p["name"].as_str())
        .expect("containerPort for the health port");
    assert_eq!(agentsup["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(agentsup["readinessProbe"]["httpGet"]["port"], port_name);
    assert_eq!(agentsup["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(agentsup["livenessProbe"]["httpGet"]["port"], port_name);

    // agentsup finishes its shutdown before the kubelet's SIGKILL.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let shutdown = seconds(cfg["supervisor"]["shutdown_timeout"].as_str().unwrap());
    assert!(
        shutdown < grace && grace <= shutdown + 10,
        "shutdown_timeout {shutdown}s vs terminationGracePeriodSeconds {grace}"
    );
    assert_eq!(cfg["supervisor"]["on_rotation"].as_str(), Some("restart"));
    for c in containers {
        assert!(
            c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object(),
            "{}: resources",
            c["name"]
        );
    }
}

#[test]
fn configmap_config_passes_check_with_the_example_secret() {
    let sb = Sandbox::new();
    let key = resource("Secret")["stringData"]["OPENAI_API_KEY"]
        .as_str()
        .unwrap()
        .to_string();
    sb.write("secrets/OPENAI_API_KEY", &key);
    let cfg = subst(
        &configmap_toml(),
        "path = \"/run/secrets/agents\"",
        &format!(
            "path = {:?}",
            sb.path().join("secrets").display().to_string()
        ),
    );
    sb.config(&cfg);
    let out = sb.run(&["check"]);
    out.assert_code(0).assert_no_leak(&Canary::of_fixed(&key));
}

/// The ConfigMap's supervisor.toml, with the pod's paths pointed into the sandbox
/// (`secrets`), health on `port`, and the worker replaced by one that fails auth
/// like openai-python until its OPENAI_API_KEY equals the content of `good`.
fn configmap_config(secrets: &Path, good: &Path, port: u16) -> String {
    let mut cfg = configmap_toml();
    cfg = subst(
        &cfg,
        "path = \"/run/secrets/agents\"",
        &format!("path = {:?}", secrets.display().to_string()),
    );
    cfg = subst(
        &cfg,
        "health = \"0.0.0.0:9464\"",
        &format!("health = \"127.0.0.1:{port}\""),
    );
    cfg = subst(
        &cfg,
        "command = [\"python3\", \"/app/agents/worker.py\"]",
        &format!(
            "command = [\"python3\", {:?}]\nvars = {{ GOOD_KEY_FILE = {:?} }}",
            repo()
                .join("tests/fixtures/workers/openai_auth.py")
                .display()
                .to_string(),
            good.display().to_string()
        ),
    );
    cfg
}

#[test]
fn kubelet_data_symlink_swap_rotates_the_key_with_the_configmap_config() {
    let sb = Sandbox::new();
    let secrets = sb.path().join("secrets");
    let keys = RotationKeys::new();
    let mut volume = KubeSecret::create(&secrets, &[("OPENAI_API_KEY", keys.old.value())]);
    let good = sb.write("good_key", format!("{}\n", keys.new.value()));
    let (mut run, port) = spawn_with_health_port(|port| {
        sb.config(&configmap_config(&secrets, &good, port));
        sb.spawn(&["run", "--log-format", "pretty", "--no-color"])
    });
    let failed = run.wait_for("class auth", PATIENCE);
    assert!(failed.contains("agent."), "{failed}");
    // Failing auth: the pod is not ready (a replica in backoff or auth-blocked).
    assert!(
        wait_until(
            PATIENCE,
            || matches!(http_status(port, "/readyz"), Some(s) if s != 200)
        ),
        "/readyz stayed 200 while the key was rejected\n{}",
        run.output()
    );

    volume.rotate(&[("OPENAI_API_KEY", keys.new.value())]);
    run.wait_for("OPENAI_API_KEY changed", Duration::from_secs(60));
    run.wait_for("authenticated with key of length", Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(60), || http_status(port, "/readyz")
            == Some(200)),
        "/readyz never became 200 after the rotation\n{}",
        run.output()
    );
    run.signal(15);
    assert_eq!(
        run.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        run.output()
    );
    keys.assert_absent(&run);
    keys.old.assert_not_in_sandbox(&sb, &["secrets"]);
    keys.new.assert_not_in_sandbox(&sb, &["secrets"]);
}
