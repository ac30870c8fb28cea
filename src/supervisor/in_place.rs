//! Rotation without a restart (issue 14): `on_rotation = "file"` replaces the
//! worker's key files in place, `"signal"` does the same and then sends each
//! running replica its `reload_signal`. The files live in [`crate::keys_dir`];
//! this is the dispatcher's side: what to write when, and whom to signal.
//!
//! An auth failure still re-reads and restarts in every mode (the replica's state
//! machine does not know about modes), and the files are up to date before that
//! restart spawns.

use crate::config::OnRotation;
use crate::env::BuiltEnv;
use crate::secret::Sensitive;

use super::Dispatcher;

impl Dispatcher {
    /// The declared keys of worker `worker` in `env`, as its key files hold them.
    fn declared_keys(&self, worker: usize, env: &BuiltEnv) -> Vec<(String, Sensitive)> {
        let w = &self.workers[worker];
        env.vars
            .iter()
            .filter(|(k, _)| w.declares(k))
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect()
    }

    /// Before a replica of a file-keeping worker spawns: its files match `env`
    /// (built from the current snapshot), and its environment names them.
    pub(super) fn prepare_key_files(
        &mut self,
        worker: usize,
        env: &BuiltEnv,
        pairs: &mut Vec<(String, String)>,
    ) {
        if !self.keys.as_ref().is_some_and(|k| k.keeps(worker)) {
            return;
        }
        let keys = self.declared_keys(worker, env);
        let Some(dir) = self.keys.as_mut() else {
            return;
        };
        if let Err(e) = dir.sync(worker, &keys) {
            tracing::error!(
                "worker {:?}: {e}; starting it with its keys in the environment only",
                self.workers[worker].name
            );
        }
        dir.extend_env(worker, pairs);
    }

    /// After a re-read whose values were adopted: every file-keeping worker's files
    /// are brought up to date, and `signal` workers' running replicas are told.
    pub(super) fn apply_in_place(&mut self) {
        if self.keys.is_none() {
            return;
        }
        for worker in 0..self.workers.len() {
            if !self.keys.as_ref().is_some_and(|k| k.keeps(worker)) {
                continue;
            }
            let Some(first) = (0..self.fleet.len()).find(|&s| self.fleet.slot(s).0 == worker)
            else {
                continue;
            };
            let env = self.built_env(first);
            let keys = self.declared_keys(worker, &env);
            let name = self.workers[worker].name.clone();
            let changed = match self.keys.as_mut().map(|k| k.sync(worker, &keys)) {
                Some(Ok(changed)) => changed,
                Some(Err(e)) => {
                    tracing::error!(
                        "worker {name:?}: {e}; its replicas keep the old key files (SIGHUP or `agentsup reload` tries again)"
                    );
                    continue;
                }
                None => continue,
            };
            if changed.is_empty() {
                continue;
            }
            let w = &self.workers[worker];
            let list = changed.join(", ");
            if w.on_rotation != OnRotation::Signal {
                tracing::info!(
                    "worker {name:?}: {list} changed: key files replaced in place (on_rotation = \"file\"), no restart"
                );
                continue;
            }
            let sig = w.reload_signal;
            let mut told = 0;
            for slot in (0..self.fleet.len()).filter(|&s| self.fleet.slot(s).0 == worker) {
                let running = self.fleet.state(slot) == crate::replica::StateKind::Running;
                if let (true, Some(pid)) = (running, self.fleet.pid(slot)) {
                    // The leader only: it re-reads its keys; a group signal would
                    // kill children that do not handle it (SIGHUP's default).
                    if crate::process::kill_pid(pid, sig as i32).is_ok() {
                        told += 1;
                    }
                }
            }
            tracing::info!(
                "worker {name:?}: {list} changed: key files replaced in place and {} sent to {told} running replica(s) (on_rotation = \"signal\"), no restart",
                sig.as_str()
            );
        }
    }
}
