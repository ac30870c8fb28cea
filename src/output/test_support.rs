//! Helpers shared by the output tests.

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use super::{Format, LineMeta, OutputConfig, Stream};
use crate::redact::SharedRedactor;
use crate::secret::Sensitive;

/// A writer that captures everything and can be held shut.
#[derive(Clone, Default)]
pub(super) struct Capture {
    pub(super) buf: Arc<Mutex<Vec<u8>>>,
    pub(super) gate: Arc<(Mutex<bool>, Condvar)>,
    pub(super) writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Capture {
    pub(super) fn closed_gate() -> Self {
        let c = Capture::default();
        *c.gate.0.lock().unwrap() = true;
        c
    }
    pub(super) fn open(&self) {
        *self.gate.0.lock().unwrap() = false;
        self.gate.1.notify_all();
    }
    pub(super) fn text(&self) -> String {
        String::from_utf8(self.buf.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let mut shut = self.gate.0.lock().unwrap();
        while *shut {
            shut = self.gate.1.wait(shut).unwrap();
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.buf.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn meta(worker: &str, replica: u32, stream: Stream) -> LineMeta {
    LineMeta {
        worker: worker.into(),
        replica,
        pid: 4242,
        stream,
    }
}

pub(super) fn config(format: Format, width: usize, secrets: &[(&str, &str)]) -> OutputConfig {
    OutputConfig {
        format,
        color: false,
        label_width: width,
        workers: vec!["planner".into(), "w".into()],
        redactor: SharedRedactor::new(
            secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Sensitive::new(*v))),
        ),
        width: None,
    }
}
