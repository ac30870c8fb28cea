//! The dispatcher's side of per-worker readiness (issue 14; the probes are
//! [`crate::ready`]): running each run's probe and reporting it as
//! [`crate::fleet::Event::Ready`]. What readiness means (not ready from spawn until
//! the probe passes; a rolling restart waits for it, or for its `timeout`, before
//! moving to the next replica) is the fleet's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Dispatcher, Input, SlotId};
use crate::ready::Probe;

impl Dispatcher {
    /// Stops the probe of `slot`'s current run, if one runs.
    pub(super) fn cancel_probe(&mut self, slot: SlotId) {
        if let Some(c) = self.io[slot].probe_cancel.take() {
            c.store(true, Ordering::Relaxed);
        }
        self.io[slot].probe_failure = None;
        // A `log` probe's watches: the stream that did not match would otherwise
        // go on testing every line of the run against the pattern.
        for tail in &self.io[slot].tail {
            if let Ok(mut t) = tail.lock() {
                t.watch(None);
            }
        }
    }

    /// Run `run` of `slot` reached its `ready` timeout: after the fleet's
    /// warning, why the probe's latest attempt failed (`http` and `exec`).
    pub(super) fn on_ready_timeout(&mut self, slot: SlotId, run: u64) {
        self.step(crate::fleet::Event::Timer(
            crate::fleet::Timer::ReadyTimeout { slot, run },
        ));
        if !self.fleet.is_current(slot, run) || self.fleet.ready(slot) != Some(false) {
            return;
        }
        let why = self.io[slot]
            .probe_failure
            .as_ref()
            .and_then(|f| f.lock().unwrap_or_else(PoisonError::into_inner).clone());
        if let Some(why) = why {
            let (w, r) = self.fleet.slot(slot);
            tracing::warn!("{}.{r}: its latest probe: {why}", self.workers[w].name);
        }
    }

    /// Run `run` of `slot` passed its probe.
    pub(super) fn on_ready(&mut self, slot: SlotId, run: u64) {
        if self.fleet.is_current(slot, run) {
            self.cancel_probe(slot);
        }
        self.step(crate::fleet::Event::Ready { slot, run });
    }

    /// `READY=1` came on run `run`'s notify socket: it counts only from that
    /// run's own process tree. Any other sender (a sibling worker of the same
    /// uid) is refused, with one warning a run.
    pub(super) fn on_notified(&mut self, slot: SlotId, run: u64, sender: Option<Sender>) {
        if !self.fleet.is_current(slot, run) {
            return;
        }
        let replica = self.fleet.pid(slot);
        if let (Some(sender), Some(replica)) = (&sender, replica)
            && sender.belongs_to(replica)
        {
            self.on_ready(slot, run);
            return;
        }
        if std::mem::replace(&mut self.io[slot].notify_refused, true) {
            return;
        }
        let (w, r) = self.fleet.slot(slot);
        let from = sender.map_or("an unknown process".to_string(), |s| {
            format!("pid {}", s.pid)
        });
        tracing::warn!(
            "{}.{r}: ignored READY=1 from {from}: not this replica's process\n  \
             only a live process of the replica's own tree counts: send it from the worker",
            self.workers[w].name
        );
    }

    /// Before replica `slot`'s run number `run` spawns: for `notify` and `log`
    /// probes, sets up what will hear it (`NOTIFY_SOCKET` goes into `pairs`).
    /// `http` and `exec` start once the process runs.
    pub(super) fn prepare_ready(
        &mut self,
        slot: SlotId,
        run: u64,
        pairs: &mut Vec<(String, String)>,
    ) {
        self.cancel_probe(slot);
        let Some(ready) = self.worker_of(slot).ready.clone() else {
            return;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        self.io[slot].probe_cancel = Some(cancel.clone());
        let tx = self.inputs_tx.clone();
        match &ready.probe {
            Probe::Log(re) => {
                // stdout and stderr: whichever prints the line first (the first
                // match cancels the probe, which takes both watches away).
                for tail in &self.io[slot].tail {
                    let tx = tx.clone();
                    let watch = crate::output::LineWatch {
                        re: re.clone(),
                        on_match: Box::new(move || {
                            let _ = tx.send(Input::Ready { slot, run });
                        }),
                    };
                    if let Ok(mut t) = tail.lock() {
                        t.watch(Some(watch));
                    }
                }
            }
            Probe::Notify => match self.notify_socket(slot, run) {
                Ok((path, sock)) => {
                    pairs.retain(|(k, _)| k != "NOTIFY_SOCKET");
                    pairs.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
                    self.io[slot].notify_refused = false;
                    tokio::spawn(listen(sock, path, cancel, tx, slot, run));
                }
                Err(e) => {
                    let (w, r) = self.fleet.slot(slot);
                    tracing::error!(
                        "{}.{r}: {e}; it cannot report ready = {{ notify = true }}",
                        self.workers[w].name
                    );
                }
            },
            Probe::Http(_) | Probe::Exec(_) => {}
        }
    }

    /// Binds run `run` of `slot`'s notify socket, owned by the worker's user.
    fn notify_socket(
        &mut self,
        slot: usize,
        run: u64,
    ) -> Result<(std::path::PathBuf, tokio::net::UnixDatagram), String> {
        if self.notify_dir.is_none() {
            let foreign = self.workers.iter().any(|w| {
                w.creds
                    .as_ref()
                    .is_some_and(|c| c.uid != nix::unistd::geteuid().as_raw())
            });
            let dir = crate::ready::NotifyDir::create(foreign)?;
            // Nothing secret is in it, but a SIGKILLed run must not leave it
            // behind in /tmp: the guard removes it (as it does the key files).
            crate::guard::remove_on_death(dir.root());
            self.notify_dir = Some(dir);
        }
        let dir = self.notify_dir.as_ref().ok_or("no notify directory")?;
        let path = dir.socket_path(slot, run);
        let _ = std::fs::remove_file(&path);
        let sock = tokio::net::UnixDatagram::bind(&path)
            .map_err(|e| format!("cannot bind its notify socket {}: {e}", path.display()))?;
        // The kernel then says which pid sent each datagram, so a sibling of the
        // same uid cannot mark this replica ready (systemd's `NotifyAccess=`).
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true).map_err(
            |e| {
                format!(
                    "cannot ask for the sender of datagrams on {}: {e}",
                    path.display()
                )
            },
        )?;
        // Only its owner may send to it, whatever the umask was: any other local
        // user could otherwise mark the replica ready.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            format!(
                "cannot make its notify socket {} private: {e}",
                path.display()
            )
        })?;
        if let Some(c) = &self.worker_of(slot).creds {
            std::os::unix::fs::chown(&path, Some(c.uid), Some(c.gid)).map_err(|e| {
                format!(
                    "cannot hand its notify socket {} to uid {}: {e} (agentsup must run as root to start a worker as another user)",
                    path.display(),
                    c.uid
                )
            })?;
        }
        Ok((path, sock))
    }

    /// Once the process of `slot` runs: starts its `http` or `exec` probe.
    pub(super) fn start_probe(&mut self, slot: SlotId, pid: u32) {
        let (w, replica) = self.fleet.slot(slot);
        let worker = &self.workers[w];
        let (Some(ready), Some(cancel)) =
            (worker.ready.clone(), self.io[slot].probe_cancel.clone())
        else {
            return;
        };
        let run = self.fleet.run(slot);
        let tx = self.inputs_tx.clone();
        let attempt: Attempt = match ready.probe {
            Probe::Http(url) => {
                let url = crate::ready::for_replica(&url, replica);
                let each = ready.interval.max(Duration::from_secs(2));
                Arc::new(move || crate::ready::http_once(&url, each))
            }
            Probe::Exec(argv) => {
                let argv: Vec<String> = argv
                    .iter()
                    .map(|a| crate::ready::for_replica(a, replica))
                    .collect();
                // The worker's inherited environment, its account's HOME/USER
                // included; never a key.
                let mut env: Vec<(String, String)> =
                    crate::env::inherited(&self.plan, worker, &self.process_env)
                        .map(|(k, v, _)| (k.to_string(), v.expose().to_string()))
                        .collect();
                env.extend([
                    ("AGENTSUP_WORKER".to_string(), worker.name.clone()),
                    ("AGENTSUP_REPLICA".to_string(), replica.to_string()),
                    ("AGENTSUP_REPLICAS".to_string(), worker.replicas.to_string()),
                    ("AGENTSUP_PID".to_string(), pid.to_string()),
                ]);
                let cwd = worker.cwd.clone();
                // As the worker's own user: the probe runs in the worker's
                // directory, whose files the worker can write.
                let creds = worker.creds.clone();
                let reaper = self.reaper.clone();
                let each = ready.interval.max(Duration::from_secs(5));
                Arc::new(move || {
                    // Through the reaper, as every child of `run` (design.md).
                    let c = crate::process::run_capture_as(
                        &argv,
                        &env,
                        &cwd,
                        each,
                        Some(&reaper),
                        creds.clone(),
                    )
                    .map_err(|e| format!("it could not start: {e}"))?;
                    if c.status == crate::auth::Termination::Exited(0) {
                        return Ok(());
                    }
                    Err(
                        match last_line(&c.stderr).or_else(|| last_line(&c.stdout)) {
                            Some(line) => format!("it ended with {}: {line}", c.status),
                            None => format!("it ended with {}", c.status),
                        },
                    )
                })
            }
            Probe::Log(_) | Probe::Notify => return,
        };
        let failure = Arc::new(Mutex::new(None));
        self.io[slot].probe_failure = Some(failure.clone());
        tokio::spawn(poll(
            cancel,
            failure,
            tx,
            slot,
            run,
            ready.interval,
            attempt,
        ));
    }
}

/// One blocking attempt of an `http` or `exec` probe: `Err` says why it failed.
type Attempt = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Tries `attempt` (blocking) every `interval` until it succeeds or `cancel`;
/// keeps why the latest attempt failed in `failure`.
async fn poll(
    cancel: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    tx: tokio::sync::mpsc::UnboundedSender<Input>,
    slot: usize,
    run: u64,
    interval: Duration,
    attempt: Attempt,
) {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        let f = attempt.clone();
        let outcome = tokio::task::spawn_blocking(move || f())
            .await
            .unwrap_or_else(|_| Err("the probe's thread panicked".into()));
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        match outcome {
            Ok(()) => {
                let _ = tx.send(Input::Ready { slot, run });
                return;
            }
            Err(why) => *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why),
        }
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

/// The last non-empty line of a probe's output as a terminal would show it and
/// redacted ([`crate::redact::redact_shown`], as every worker text quoted in an
/// event), at most 120 characters.
fn last_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let shown = crate::redact::redact_shown(line);
    let mut short: String = shown.chars().take(120).collect();
    if shown.chars().count() > 120 {
        short.push('…');
    }
    Some(short)
}

/// Passes every `READY=1` datagram on a run's notify socket to the dispatcher
/// with the pid that sent it (which decides whether it counts); removes the
/// socket once the probe is cancelled.
async fn listen(
    sock: tokio::net::UnixDatagram,
    path: std::path::PathBuf,
    cancel: Arc<AtomicBool>,
    tx: tokio::sync::mpsc::UnboundedSender<Input>,
    slot: usize,
    run: u64,
) {
    let mut buf = vec![0u8; 4096];
    while !cancel.load(Ordering::Relaxed) {
        match tokio::time::timeout(
            Duration::from_millis(500),
            recv_with_sender(&sock, &mut buf),
        )
        .await
        {
            Ok(Ok((n, sender))) if crate::ready::says_ready(&buf[..n]) => {
                // Placed now, before the dispatcher sees it: a short-lived sender
                // (`systemd-notify` run from a shell worker) may exit any moment.
                let sender = sender.map(Sender::place);
                let _ = tx.send(Input::Notified { slot, run, sender });
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// One datagram, and the pid the kernel says sent it (`SO_PASSCRED`: a sender
/// cannot claim another process's pid without `CAP_SYS_ADMIN`).
async fn recv_with_sender(
    sock: &tokio::net::UnixDatagram,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<u32>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, UnixCredentials, recvmsg};
    use std::os::fd::AsRawFd;
    sock.async_io(tokio::io::Interest::READABLE, || {
        let mut space = nix::cmsg_space!(UnixCredentials);
        let mut iov = [std::io::IoSliceMut::new(&mut *buf)];
        let msg = recvmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let sender = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(cred) => u32::try_from(cred.pid()).ok(),
            _ => None,
        });
        Ok((msg.bytes, sender))
    })
    .await
}

/// Who sent a notify datagram, read from `/proc` the moment it arrived.
#[derive(Debug)]
pub(super) struct Sender {
    pub(super) pid: u32,
    /// The sender and its ancestors, nearest first; empty if it was already gone.
    ancestry: Vec<u32>,
}

impl Sender {
    fn place(pid: u32) -> Sender {
        Sender {
            pid,
            ancestry: crate::procfs::ancestry(pid),
        }
    }

    /// Whether it is `replica`'s process or runs under it: what may report it
    /// ready. Not its process group: a sibling of the same session may join
    /// that with `setpgid`. A sender already gone when it was read cannot be
    /// placed, so it does not count.
    pub(super) fn belongs_to(&self, replica: u32) -> bool {
        self.ancestry.contains(&replica)
    }
}

#[cfg(test)]
mod tests {
    use super::last_line;

    #[test]
    fn a_probe_failure_shows_its_last_line_as_a_terminal_would() {
        assert_eq!(last_line(b""), None);
        assert_eq!(last_line(b"\n  \n"), None);
        assert_eq!(
            last_line(b"starting\nnot yet: db down\n\n").as_deref(),
            Some("not yet: db down")
        );
        assert_eq!(
            last_line(b"\x1b[31mred\x07\n").as_deref(),
            Some("red"),
            "shown as a terminal shows it: no control character reaches the event line"
        );
        let long = "x".repeat(300);
        let shown = last_line(long.as_bytes()).unwrap();
        assert_eq!(shown.chars().count(), 121);
        assert!(shown.ends_with('…'));
    }
}
