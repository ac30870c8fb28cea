//! The final sweep: no process agentsup started survives it (SPEC 5).
//!
//! Workers' groups are killed when their leaders exit (see `reaper.rs`), but a
//! descendant may have left its group (`setsid`, a daemon) or been reparented to
//! agentsup (the child subreaper) while the workers were stopping. The sweep kills
//! every descendant of agentsup, every process in a group or session that one of
//! them led, and repeats kill, reap and rescan until nothing is left or the
//! deadline passes; what survives is named in a warning. The guard is spared: it
//! exits by itself once told the run ended.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The sweep's memory across passes: groups and sessions led by processes we
/// started, so their members are found after the leader is gone.
#[derive(Default)]
pub(super) struct Sweep {
    groups: HashSet<u32>,
    sessions: HashSet<u32>,
}

impl Sweep {
    /// One pass: SIGKILLs every live process that is ours; returns their pids.
    pub(super) fn pass(&mut self) -> Vec<u32> {
        let me = std::process::id();
        let procs = crate::procfs::all();
        let my = procs.iter().find(|p| p.pid == me);
        let (my_pgrp, my_sid) = my.map_or((0, 0), |p| (p.pgrp, p.session));
        let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, p) in procs.iter().enumerate() {
            children.entry(p.ppid).or_default().push(i);
        }
        let mut ours = HashSet::new();
        let mut stack = vec![me];
        while let Some(pid) = stack.pop() {
            for &i in children.get(&pid).map_or(&[][..], Vec::as_slice) {
                let p = &procs[i];
                if crate::guard::is_guard(p.pid) || !ours.insert(p.pid) {
                    continue;
                }
                stack.push(p.pid);
                // Groups and sessions a descendant leads, never agentsup's own
                // (workers not in their own group share it, and so may the shell).
                if p.pgrp == p.pid && p.pgrp != my_pgrp {
                    self.groups.insert(p.pgrp);
                }
                if p.session == p.pid && p.session != my_sid {
                    self.sessions.insert(p.session);
                }
            }
        }
        let mut killed = Vec::new();
        for p in &procs {
            let member = ours.contains(&p.pid)
                || self.groups.contains(&p.pgrp)
                || self.sessions.contains(&p.session);
            if !member || p.zombie || p.pid == me || crate::guard::is_guard(p.pid) {
                continue;
            }
            let _ = crate::process::kill_pid(p.pid, libc::SIGKILL);
            killed.push(p.pid);
        }
        killed
    }
}

/// Kills every process agentsup started that is still alive, repeating until none
/// is left or `deadline` passes; warns naming what survived.
pub(super) fn final_sweep(deadline: Instant) {
    let mut sweep = Sweep::default();
    let mut left = sweep.pass();
    while !left.is_empty() {
        if Instant::now() >= deadline {
            let named: Vec<String> = left
                .iter()
                .take(20)
                .map(|&pid| format!("{pid} ({})", crate::procfs::comm(pid)))
                .collect();
            tracing::warn!(
                "{} process(es) started by the workers survived the final sweep: {}{}",
                left.len(),
                named.join(", "),
                if left.len() > 20 { ", ..." } else { "" }
            );
            return;
        }
        // The reaper collects the killed ones (they are ours or reparented to us).
        std::thread::sleep(Duration::from_millis(20));
        left = sweep.pass();
    }
}
