//! agentsup under systemd `Type=notify` (issue 14): `READY=1` once the replicas
//! have started, `STATUS=`, `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1`
//! on shutdown, received on a real datagram socket as systemd would.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// Every datagram received on `sock`, in order, collected by a thread.
fn collect(sock: UnixDatagram) -> Arc<Mutex<Vec<String>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let out = got.clone();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => out
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
            if Arc::strong_count(&out) == 1 {
                break;
            }
        }
    });
    got
}

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let sb = Sandbox::new();
    sb.config(
        "[[worker]]\nname = \"w\"\nreplicas = 2\ncommand = [\"sh\", \"-c\", \"echo up; exec sleep 300\"]\n",
    );
    let path = sb.path().join("notify.sock");
    let got = collect(UnixDatagram::bind(&path).unwrap());
    let mut c = sb.cmd(&["run", "--no-color"]);
    c.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "400000");
    let mut run = sb.spawn_cmd(c);
    let all = || got.lock().unwrap().join("\n");
    assert!(
        wait_until(PATIENCE, || all().contains("READY=1")),
        "no READY=1: {}",
        all()
    );
    // READY only once both replicas run: the message that carries it says so.
    let ready = got
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.contains("READY=1"))
        .cloned()
        .unwrap();
    assert!(ready.contains("STATUS=2 of 2 replicas running"), "{ready}");
    assert_eq!(run.output().matches("starting -> running").count(), 2);
    // Pinged every 200 ms.
    assert!(
        wait_until(PATIENCE, || all().matches("WATCHDOG=1").count() >= 3),
        "{}",
        all()
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    assert!(
        wait_until(PATIENCE, || all().contains("STOPPING=1")),
        "{}",
        all()
    );
    assert_eq!(all().matches("READY=1").count(), 1, "{}", all());
}

#[test]
fn workers_never_see_notify_socket_and_a_short_run_is_still_ready() {
    // NOTIFY_SOCKET is agentsup's, not the workers': not inherited by default.
    let sb = Sandbox::new();
    sb.config(
        "[[worker]]\nname = \"w\"\nrestart = \"never\"\ncommand = [\"sh\", \"-c\", \"echo notify=${NOTIFY_SOCKET:-unset}\"]\n",
    );
    let path = sb.path().join("notify.sock");
    let got = collect(UnixDatagram::bind(&path).unwrap());
    let mut c = sb.cmd(&["run", "--no-color"]);
    c.env("NOTIFY_SOCKET", &path);
    let out = sb.run_cmd(c);
    out.assert_code(0);
    out.assert_contains("notify=unset");
    assert!(wait_until(PATIENCE, || got
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.contains("READY=1"))));
}
