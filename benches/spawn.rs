//! How long one start of `/bin/true` takes through each way of starting a process,
//! measured back to back and interleaved (issue 11 step 4: does the hand-written
//! `clone(CLONE_VM | CLONE_VFORK)` child routine earn its place over
//! `posix_spawn`?).
//!
//! `cargo bench --bench spawn -- [spawns per round] [rounds] [MB of touched heap]`
//!
//! Each round runs every method for the same number of spawns, in a rotated order,
//! so a neighbour's build slowing the machine down hits each method alike. Each
//! spawn is waited for before the next. The heap is allocated and touched first,
//! because what `fork` costs grows with the parent's mapped memory (page tables
//! copied, every page write-protected) and agentsup holds tens of MB.
//!
//! - `child-routine`: agentsup's own path, [`agentsup::sys::child::spawn`] with what
//!   a worker gets (PDEATHSIG, signal dispositions reset, own group, stdin
//!   `/dev/null`, every other descriptor closed, chdir, empty mask);
//! - `posix_spawn`: glibc's, through nix, with what it can express of the same
//!   (own group, dispositions to default, empty mask, stdin `/dev/null`);
//! - `fork+exec`: a plain `fork` (what std's `Command::pre_exec` forces) with the
//!   group and stdin set in the child.
//!
//! A plain program, not criterion: the point is the interleaving.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Instant;

use agentsup::sys::child::{self, CArray};
use agentsup::sys::process::{ForkResult, fork_single_threaded};
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::SigSet;
use nix::unistd::{Pid, execve, setpgid};

const TRUE: &str = "/bin/true";

fn wait(pid: i32) {
    loop {
        match agentsup::sys::wait::waitpid(pid, true) {
            Ok(Some(status)) => {
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => panic!("waitpid: {other:?}"),
        }
    }
}

struct Inputs {
    program: CString,
    argv: CArray,
    envp: CArray,
    cwd: CString,
    devnull: File,
    argv_c: Vec<CString>,
    envp_c: Vec<CString>,
}

fn child_routine(i: &Inputs) {
    let spec = child::Spec {
        program: &i.program,
        argv: &i.argv,
        envp: &i.envp,
        cwd: &i.cwd,
        stdio: [i.devnull.as_raw_fd(), -1, -1],
        own_group: true,
        take_terminal: false,
        pdeathsig: true,
        reset: &[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT],
        ignore: &[],
        creds: None,
    };
    let pid = child::spawn(&spec).expect("child routine");
    wait(pid as i32);
}

fn posix(i: &Inputs) {
    let mut attr = PosixSpawnAttr::init().unwrap();
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK,
    )
    .unwrap();
    attr.set_pgroup(Pid::from_raw(0)).unwrap();
    attr.set_sigdefault(&SigSet::all()).unwrap();
    attr.set_sigmask(&SigSet::empty()).unwrap();
    let mut actions = PosixSpawnFileActions::init().unwrap();
    actions.add_dup2(i.devnull.as_raw_fd(), 0).unwrap();
    let pid = posix_spawn(i.program.as_c_str(), &actions, &attr, &i.argv_c, &i.envp_c)
        .expect("posix_spawn");
    wait(pid.as_raw());
}

fn fork_exec(i: &Inputs) {
    match fork_single_threaded().expect("fork") {
        ForkResult::Child => {
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let _ = nix::unistd::dup2_stdin(&i.devnull);
            let _ = execve(&i.program, &i.argv_c, &i.envp_c);
            agentsup::sys::process::exit_now(127)
        }
        ForkResult::Parent { child } => wait(child.as_raw()),
    }
}

/// CPU seconds used so far by this process and its waited-for children: less
/// sensitive than wall time to other processes competing for the cores.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            let u = getrusage(who).unwrap();
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .sum()
}

/// A name and one spawn-and-wait.
type Method = (&'static str, fn(&Inputs));

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; keep the numbers only.
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let per_round = nums.first().copied().unwrap_or(300);
    let rounds = nums.get(1).copied().unwrap_or(7);
    let heap_mb = nums.get(2).copied().unwrap_or(40);

    // Touched, so it is mapped and a fork has page tables to copy.
    let heap: Vec<u8> = vec![1u8; heap_mb << 20];
    std::hint::black_box(&heap);

    let inputs = Inputs {
        program: CString::new(TRUE).unwrap(),
        argv: CArray::new([TRUE]).unwrap(),
        envp: CArray::env([("PATH", "/usr/bin:/bin")]).unwrap(),
        cwd: CString::new("/").unwrap(),
        devnull: File::open("/dev/null").unwrap(),
        argv_c: vec![CString::new(TRUE).unwrap()],
        envp_c: vec![CString::new("PATH=/usr/bin:/bin").unwrap()],
    };
    let methods: [Method; 3] = [
        ("child-routine", child_routine),
        ("posix_spawn", posix),
        ("fork+exec", fork_exec),
    ];
    // Warm-up: page in /bin/true and the code of each path.
    for (_, m) in &methods {
        for _ in 0..20 {
            m(&inputs);
        }
    }
    let mut per_method: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    let mut cpu_per_method: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    println!(
        "{per_round} spawns of {TRUE} per method per round, {rounds} rounds, {heap_mb} MB touched heap"
    );
    for round in 0..rounds {
        let mut line = format!("round {round}:");
        for k in 0..methods.len() {
            let idx = (round + k) % methods.len();
            let (name, m) = methods[idx];
            let (start, cpu) = (Instant::now(), cpu_seconds());
            for _ in 0..per_round {
                m(&inputs);
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / per_round as f64;
            let cpu_us = (cpu_seconds() - cpu) * 1e6 / per_round as f64;
            per_method[idx].push(us);
            cpu_per_method[idx].push(cpu_us);
            line.push_str(&format!("  {name} {us:.0} µs ({cpu_us:.0} CPU)"));
        }
        println!("{line}");
    }
    println!("per spawn+wait, median of rounds (min-max); wall, then CPU (ours + child's):");
    for (i, (name, _)) in methods.iter().enumerate() {
        let range = |v: &mut Vec<f64>| {
            let lo = v.iter().copied().fold(f64::MAX, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{:>6.0} µs ({lo:.0}-{hi:.0})", median(v))
        };
        println!(
            "  {name:<14} wall {}   CPU {}",
            range(&mut per_method[i]),
            range(&mut cpu_per_method[i])
        );
    }
}
