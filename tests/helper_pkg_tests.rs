//! The worker-side helper packages (python/agentsup, node/agentsup) run their own
//! test suites here, so `cargo test` covers them: real interpreters, the real
//! openai SDKs against loopback fakes, and a real Celery worker on a real Redis.

use crate::support::{repo as root, test_venv_python};
use std::process::Command;

#[test]
fn python_helper_package_suite_passes_with_real_sdks_and_celery() {
    let python = test_venv_python();
    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-s", "python/tests", "-v"])
        .current_dir(root())
        // Turns "celery is not installed" skips into failures: the venv has it.
        .env("AGENTSUP_REQUIRE_ALL", "1")
        .output()
        .expect("run the Python helper's tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python/tests failed:\n{text}");
    assert!(!text.contains("skipped"), "a test was skipped:\n{text}");
}

#[test]
fn node_helper_package_suite_passes_with_the_real_sdk() {
    // setup-deps installs examples/node-openai/node_modules, which the tests import.
    let _ = test_venv_python();
    let out = Command::new("node")
        .args(["--test", "node/agentsup/test/"])
        .current_dir(root())
        .output()
        .expect("run node --test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "node/agentsup tests failed:\n{text}");
    assert!(text.contains("# fail 0"), "{text}");
}
