//! Fixtures shared by several test files: paths into the repository, a free
//! loopback port, a pair of rotation keys, a Kubernetes Secret volume as the
//! kubelet lays it out, and the loopback fake providers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Canary, PATIENCE, python, wait_until};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The path of `tests/fixtures/workers/{name}`, as a string for a config.
pub fn fixture(name: &str) -> String {
    repo()
        .join("tests/fixtures/workers")
        .join(name)
        .display()
        .to_string()
}

/// A port that was free a moment ago on 127.0.0.1 (the kernel's pick, released at
/// once: a caller that binds it later must cope with losing it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The HTTP status of `GET path` on 127.0.0.1:`port`, or `None` if nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    super::get(port, path).map(|r| r.code)
}

/// Writes `content` to `path` atomically (a hidden temp file renamed over it), the
/// way a secret manager or `rotate.py` does, so a re-read never sees half a key.
pub fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The two keys of a rotation test: the one a worker starts with (the provider
/// rejects it) and the one rotated in. Both OpenAI-shaped canaries.
pub struct RotationKeys {
    pub old: Canary,
    pub new: Canary,
}

impl RotationKeys {
    pub fn new() -> RotationKeys {
        RotationKeys {
            old: Canary::new("sk-proj-"),
            new: Canary::new("sk-proj-"),
        }
    }

    /// Asserts neither key is anywhere in `surface`.
    pub fn assert_absent(&self, surface: &(impl super::Surface + ?Sized)) {
        self.old.assert_absent(surface);
        self.new.assert_absent(surface);
    }
}

/// A Secret volume laid out the way the kubelet does it (`atomic_writer.go`):
/// `KEY -> ..data/KEY`, `..data -> ..<timestamp>`, updated by writing a new
/// timestamped directory, pointing `..data_tmp` at it, renaming that over `..data`
/// and removing the old directory.
pub struct KubeSecret {
    dir: PathBuf,
    version: u32,
}

impl KubeSecret {
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> KubeSecret {
        std::fs::create_dir_all(dir).unwrap();
        let s = KubeSecret {
            dir: dir.to_path_buf(),
            version: 1,
        };
        s.write_version(files);
        symlink(s.version_name(), dir.join("..data")).unwrap();
        for (name, _) in files {
            symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        s
    }

    fn version_name(&self) -> String {
        format!("..2026_11_23_10_00_00.{}", self.version)
    }

    fn write_version(&self, files: &[(&str, &str)]) {
        let d = self.dir.join(self.version_name());
        std::fs::create_dir(&d).unwrap();
        for (name, value) in files {
            std::fs::write(d.join(name), value).unwrap();
        }
    }

    /// Rotates to `files` (same names) and returns the instant the new values
    /// became visible (right after the rename).
    pub fn rotate(&mut self, files: &[(&str, &str)]) -> Instant {
        let old = self.dir.join(self.version_name());
        self.version += 1;
        self.write_version(files);
        symlink(self.version_name(), self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        let visible = Instant::now();
        std::fs::remove_dir_all(old).unwrap();
        visible
    }
}

/// What the fake providers log for the sentinel request of
/// [`FakeProvider::settled_log`].
const SENTINEL: &str = "GET /models -> 401";

/// A loopback fake of a provider's API (`examples/demo/fake_provider.py` for
/// OpenAI, `tests/fixtures/fake_anthropic.py` for Anthropic), killed on drop,
/// whose output lines are collected all along (so it never blocks on a full pipe).
pub struct FakeProvider {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl FakeProvider {
    /// The fake OpenAI API accepting exactly the content of `key_file` (re-read on
    /// every request, so writing the file rotates the key it accepts). It takes
    /// its port from the environment, so a free one is found first; should another
    /// process take it in between, the fake exits and another port is tried.
    pub fn openai(key_file: &Path) -> FakeProvider {
        let script = repo().join("examples/demo/fake_provider.py");
        let mut logs = String::new();
        for _ in 0..5 {
            let port = free_port();
            match FakeProvider::start(&script, key_file, port, "provider: fake OpenAI API on") {
                Ok(f) => return f,
                Err(log) => logs.push_str(&format!("port {port}:\n{log}\n")),
            }
        }
        panic!("the fake OpenAI provider did not start listening:\n{logs}");
    }

    /// [`FakeProvider::openai`] accepting only `key` (kept in a file of its own).
    pub fn openai_accepting(key: &str) -> FakeProvider {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("accepted_key");
        std::fs::write(&key_file, key).unwrap();
        let mut f = FakeProvider::openai(&key_file);
        f._dir = Some(dir);
        f
    }

    /// [`FakeProvider::openai_accepting`] on a given `port`, for a test whose
    /// workers must know the port before the provider is up.
    pub fn openai_on(port: u16, key: &str) -> FakeProvider {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("accepted_key");
        std::fs::write(&key_file, key).unwrap();
        let script = repo().join("examples/demo/fake_provider.py");
        let mut f = FakeProvider::start(&script, &key_file, port, "provider: fake OpenAI API on")
            .unwrap_or_else(|log| panic!("the fake provider did not start on {port}:\n{log}"));
        f._dir = Some(dir);
        f
    }

    /// `tests/fixtures/fake_anthropic.py`, accepting only `key`, on a port it picks.
    pub fn anthropic(key: &str) -> FakeProvider {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("accepted_key");
        std::fs::write(&key_file, key).unwrap();
        let script = repo().join("tests/fixtures/fake_anthropic.py");
        let mut f = FakeProvider::start(&script, &key_file, 0, "anthropic: listening on")
            .unwrap_or_else(|log| panic!("the fake Anthropic provider did not start:\n{log}"));
        let line = f.lines_matching("anthropic: listening on").remove(0);
        f.port = line.rsplit(' ').next().unwrap().parse().unwrap();
        f._dir = Some(dir);
        f
    }

    /// Starts `script` and waits until it prints `ready` (it does after binding,
    /// so it then accepts connections); `Err(its output)` when it exits first.
    fn start(
        script: &Path,
        key_file: &Path,
        port: u16,
        ready: &str,
    ) -> Result<FakeProvider, String> {
        let mut child = Command::new(python())
            .arg(script)
            .env("FAKE_PROVIDER_KEY_FILE", key_file)
            .env("FAKE_PROVIDER_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the fake providers");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers: Vec<_> = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .into_iter()
        .map(|stream| {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            })
        })
        .collect();
        let mut fake = FakeProvider {
            child,
            port,
            lines,
            _dir: None,
        };
        let mut exited = false;
        let up = wait_until(PATIENCE, || {
            exited = !matches!(fake.child.try_wait(), Ok(None));
            exited || !fake.lines_matching(ready).is_empty()
        });
        assert!(
            up,
            "the fake provider neither started nor exited within {PATIENCE:?}:\n{}",
            fake.log()
        );
        if !exited {
            return Ok(fake);
        }
        // Exited: keep its complete output for the caller's message.
        for r in readers {
            let _ = r.join();
        }
        Err(fake.log())
    }

    /// The OpenAI-style base URL (`/v1` included).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The Anthropic-style base URL (no `/v1`: the SDK adds it).
    pub fn anthropic_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn lines_matching(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Every line the fake printed for requests made before now. The fake prints
    /// one line per rejected request; a sentinel request (wrong key, on `/models`
    /// where agentsup asks `/v1/models`) is made now, and once its line arrives
    /// every earlier line has too.
    pub fn settled_log(&self) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(
            b"GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            wait_until(PATIENCE, || !self.lines_matching(SENTINEL).is_empty()),
            "the fake never logged the sentinel:\n{}",
            self.log()
        );
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.contains(SENTINEL))
            .cloned()
            .collect()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
