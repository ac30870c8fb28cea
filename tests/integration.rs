//! One integration-test binary (ripgrep's layout): every file below runs the real
//! `agentsup` binary against real child processes in temp dirs.
#![allow(clippy::disallowed_methods)] // tests may wait on their own children directly

mod support;

mod canary_sweep_tests;
mod celery_tests;
mod check_tests;
mod claims_tests;
mod contain_tests;
mod control_tests;
mod control_trust_tests;
mod dotenv_tests;
mod e2e_tests;
mod env_tests;
mod examples_tests;
mod exec_tests;
mod fleet_tests;
mod fork_tests;
mod health_tests;
mod helper_pkg_tests;
mod init_tests;
mod k8s_tests;
mod notify_tests;
mod probe_tests;
mod readable_tests;
mod ready_tests;
mod redaction_tests;
mod refresh_tests;
mod regression_tests;
mod resilience_tests;
mod rotation_mode_tests;
mod run_tests;
mod signal_tests;
mod source_command_tests;
mod stop_target_tests;
mod validate_tests;
mod watch_tests;
