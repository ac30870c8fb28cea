"""agentsup fork-mode template (SPEC 6). Standard library only.

agentsup embeds this file in its binary (src/fork/mod.rs) and starts it once per
`start = "fork"` worker, with the worker's environment *minus every secret key*.
It imports the worker's `preload` modules once, then forks one child per replica
on request. Each child gets its own session and process group, its own stdout and
stderr pipes (created by agentsup), its complete environment, and runs the
worker's `module` (like `python -m`) or `script` as `__main__`.

Protocol, over one Unix stream socket (path in argv[1], connected to agentsup):

agentsup -> template, one line each:
    config   {"preload": [...], "module": str|null, "script": str|null}
    fork     {"id": N, "argv": [...], "cwd": str, "fds": 2} TAB {env} LF
             with the child's stdout and stderr write ends attached (SCM_RIGHTS).
             The environment after the TAB is parsed only in the child, so the
             template never turns a replica's keys into Python strings.
template -> agentsup, one JSON object per line:
    {"event": "ready", "pid": P, "python": "3.12.1", "threads": [...]}
    {"event": "preload_failed", "module": M, "traceback": T}
    {"event": "forked", "id": N, "pid": P}
    {"event": "fork_failed", "id": N, "error": E}
    {"event": "exit", "pid": P, "code": C}   or   {..., "signal": S}

The template is the children's parent: it reaps them (SIGCHLD wakes the main
loop) and reports every exit, so agentsup learns each status exactly. When
agentsup closes the socket the template kills every child's process group and
exits; when the template dies, its children die with it (PR_SET_PDEATHSIG) and
agentsup kills their groups.

The template never starts a thread: forking a multi-threaded process copies only
the forking thread, and any lock another thread held stays locked in the child.
"""

import array
import atexit
import collections
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback

try:
    # Loaded here, once, so that children do not pay for it.
    import ctypes

    _LIBC = ctypes.CDLL(None, use_errno=True)
except Exception:  # a Python built without ctypes: agentsup still kills the groups
    _LIBC = None

PR_SET_PDEATHSIG = 1
THIS_FILE = os.path.abspath(__file__)
# Each fork request carries 2 fds; room for several requests per read.
MAX_FDS = 32
# Above any descriptor a process can hold (the kernel's NR_OPEN is 2**20).
MAX_FD = 1 << 30
# Exit statuses of a child that failed before running the worker's code.
CHILD_SETUP_FAILED = 71

# runpy swaps sys.modules["__main__"] in the child; keep this module alive anyway.
_SELF = sys.modules[__name__]


def wipe(buf, n=None):
    """Overwrites the first n bytes of a bytearray with zeros, in place.

    Best effort: the template never needs a replica's environment, so the bytes
    that carried it are cleared as soon as the child has its own copy.
    """
    n = len(buf) if n is None else n
    buf[:n] = bytes(n)


class Channel:
    """The socket to agentsup: JSON lines in both directions, plus received fds."""

    def __init__(self, sock):
        self.sock = sock
        self.pending = bytearray()
        self.fds = collections.deque()
        self.recv_buf = bytearray(64 * 1024)

    def fill(self):
        """Reads once from the socket. Returns False at end of stream."""
        n, ancdata, flags, _ = self.sock.recvmsg_into(
            [self.recv_buf], socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
        )
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                self.fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            # Descriptors were dropped by the kernel: requests and fds no longer
            # pair up, and guessing would hand a child someone else's pipe.
            fatal("file descriptors from agentsup were truncated")
        if n == 0:
            return False
        self.pending += memoryview(self.recv_buf)[:n]
        wipe(self.recv_buf, n)
        return True

    def lines(self):
        """Yields every complete line received so far (as bytearrays)."""
        while True:
            end = self.pending.find(b"\n")
            if end < 0:
                return
            line = self.pending[:end]
            wipe(self.pending, end + 1)
            del self.pending[: end + 1]
            yield line

    def read_line(self):
        """Blocks until one complete line has arrived (used before serving)."""
        while True:
            for line in self.lines():
                return line
            if not self.fill():
                sys.exit(0)  # agentsup went away before configuring us

    def send(self, message):
        self.sock.sendall(json.dumps(message).encode() + b"\n")


def fatal(message):
    sys.stderr.write("agentsup fork template: %s\n" % message)
    sys.stderr.flush()
    os._exit(4)


def fix_sys_path(config):
    """Makes sys.path[0] what `python -m module` or `python script` would have.

    Python put this file's private directory first; a worker would instead see its
    working directory (-m) or its script's directory. With -P / PYTHONSAFEPATH
    Python adds nothing, and neither do we.
    """
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(THIS_FILE):
        if config.get("script"):
            sys.path[0] = os.path.dirname(os.path.realpath(config["script"]))
        else:
            sys.path[0] = os.getcwd()


def preload(chan, modules):
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as e:
            # Start at the preloaded module's own frames: ours and importlib's say
            # nothing, and a module that does not exist has none at all.
            tb = e.__traceback__
            while tb is not None and is_import_machinery(tb.tb_frame.f_code.co_filename):
                tb = tb.tb_next
            text = "".join(traceback.format_exception(type(e), e.with_traceback(tb), tb))
            chan.send({"event": "preload_failed", "module": name, "traceback": text})
            sys.stderr.flush()
            os._exit(3)
    # Move everything imported so far out of the collector's reach: a collection in
    # a child would otherwise write to every object header and un-share the pages
    # that fork mode exists to share.
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()


class Template:
    def __init__(self, chan, config):
        self.chan = chan
        self.config = config
        # pid -> True for children whose exit agentsup is waiting for.
        self.children = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()

    # -- parent side ---------------------------------------------------------------

    def serve(self):
        # A SIGCHLD writes a byte to wake_w, which wakes select(): reaping happens in
        # the main loop, never inside a signal handler.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.chan.sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in self.selector.select():
                    if key.fileobj == self.wake_r:
                        self.drain_wakeups()
                    elif not self.chan.fill():
                        self.shut_down()
                    else:
                        for line in self.chan.lines():
                            self.handle(line)
                self.reap()
        except OSError:
            # The socket broke: agentsup is gone, and so must the children be.
            self.shut_down()

    def drain_wakeups(self):
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def handle(self, line):
        tab = line.find(b"\t")
        if tab < 0:
            fatal("malformed request from agentsup")
        request = json.loads(bytes(line[:tab]).decode("utf-8"))
        env_bytes = line[tab + 1 :]
        wipe(line)
        wanted = int(request.get("fds", 2))
        if len(self.chan.fds) < wanted:
            fatal("a fork request arrived without its pipes")
        fds = [self.chan.fds.popleft() for _ in range(wanted)]
        try:
            pid, error = self.fork(request, env_bytes, fds)
        finally:
            wipe(env_bytes)
            for fd in fds:
                os.close(fd)
        if error is None:
            self.children[pid] = True
            self.chan.send({"event": "forked", "id": request["id"], "pid": pid})
        else:
            self.chan.send({"event": "fork_failed", "id": request["id"], "error": error})

    def fork(self, request, env_bytes, fds):
        """Forks one child; returns (pid, None) or (pid or None, error text)."""
        sync_r, sync_w = os.pipe()
        # Anything buffered now would be written twice: by us and by the child.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            # os.fork() also runs the os.register_at_fork() hooks: the random
            # module reseeds, logging re-creates its locks, and so on.
            pid = os.fork()
        except OSError as e:
            os.close(sync_r)
            os.close(sync_w)
            return None, "fork failed: %s" % e
        if pid == 0:
            try:
                os.close(sync_r)
                Child(self, request, env_bytes, fds, sync_w).run()
            finally:
                os._exit(CHILD_SETUP_FAILED)  # not reached unless run() raised
        os.close(sync_w)
        # Wait until the child is its own session and group leader (and has armed
        # PDEATHSIG), so agentsup can signal its group as soon as it learns the pid.
        first = os.read(sync_r, 1)
        rest = b""
        if first and first != b"\0":
            while True:
                chunk = os.read(sync_r, 4096)
                if not chunk:
                    break
                rest += chunk
        os.close(sync_r)
        if first == b"\0":
            return pid, None
        if not first:
            return pid, "the child died while it was being set up"
        return pid, (first + rest).decode("utf-8", "replace")

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.children.pop(pid, None) is None:
                continue  # a child whose setup failed, or one a preloaded module started
            if os.WIFSIGNALED(status):
                self.chan.send({"event": "exit", "pid": pid, "signal": os.WTERMSIG(status)})
            elif os.WIFEXITED(status):
                self.chan.send({"event": "exit", "pid": pid, "code": os.WEXITSTATUS(status)})

    def shut_down(self):
        """agentsup closed the socket: no child may outlive the template."""
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        sys.stdout.flush()
        sys.stderr.flush()
        # os._exit, not sys.exit: a thread a preloaded module started must not keep
        # a dead template waiting.
        os._exit(0)


class Child:
    """Everything that happens in a forked child, in order."""

    def __init__(self, template, request, env_bytes, fds, sync_w):
        self.template = template
        self.config = template.config
        self.request = request
        self.env_bytes = env_bytes
        self.fds = fds
        self.sync_w = sync_w

    def run(self):
        try:
            self.set_up()
        except BaseException as e:
            os.write(self.sync_w, ("%s: %s" % (type(e).__name__, e)).encode()[:4000] or b"?")
            os._exit(CHILD_SETUP_FAILED)
        os.write(self.sync_w, b"\0")
        os.close(self.sync_w)
        finish(run_main(self.config))

    def set_up(self):
        parent = os.getppid()
        # Own session, hence own process group: agentsup stops the replica by
        # signalling the group whose id is this pid, and the terminal (if any) is
        # left behind like any daemon's.
        os.setsid()
        if _LIBC is not None:
            # prctl is variadic in C: pass every argument as an unsigned long.
            args = [ctypes.c_ulong(v) for v in (PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)]
            if _LIBC.prctl(*args) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
            if os.getppid() != parent:
                os._exit(1)  # the template died before the death signal was armed
        # The template's own descriptors: a child holding the socket would keep
        # agentsup from seeing the template die. Close without unregistering: the
        # epoll instance is shared with the template.
        chan = self.template.chan
        os.close(self.template.selector.fileno())
        chan.sock.close()
        os.close(self.template.wake_r)
        os.close(self.template.wake_w)
        # Pipes that came with later requests belong to other replicas: holding
        # them would keep their output open after they exit. And bytes of later
        # requests (their environments) are none of this child's business.
        while chan.fds:
            os.close(chan.fds.popleft())
        wipe(chan.pending)
        wipe(chan.recv_buf)
        reset_signals()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(self.fds[0], 1)
        os.dup2(self.fds[1], 2)
        for fd in set([null] + self.fds) - {0, 1, 2}:
            os.close(fd)
        # Descriptors 0, 1, 2 and nothing else, as for spawned workers: whatever a
        # preloaded module opened (a log file, a socket) is the template's, not the
        # replica's. The sync pipe stays until the worker's code runs. (On Linux
        # os.closerange is close_range(2), or a walk of /proc/self/fd.)
        os.closerange(3, self.sync_w)
        os.closerange(self.sync_w + 1, MAX_FD)
        # Replace the environment entirely: the template's is the worker's minus its
        # keys, and nothing of it may linger.
        env = json.loads(bytes(self.env_bytes).decode("utf-8"))
        wipe(self.env_bytes)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(self.request["cwd"])
        sys.argv = list(self.request["argv"])
        reseed()


def reset_signals():
    """Dispositions as a freshly started interpreter has them.

    Handlers a preloaded module installed, and the template's SIGCHLD wake-up, are
    not the worker's: SIGTERM and friends kill it, SIGINT raises KeyboardInterrupt,
    SIGPIPE stays ignored (Python's own start-up default).
    """
    signal.set_wakeup_fd(-1)
    for name in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGALRM"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def reseed():
    """Children must not share random streams. `random` reseeds itself at fork;
    numpy's legacy global generator does not."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except Exception:
            pass


def run_main(config):
    """Runs the worker's code as __main__; returns its exit status like python would."""
    try:
        if config.get("module"):
            runpy.run_module(config["module"], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(config["script"], run_name="__main__")
    except SystemExit as e:
        return exit_status(e.code)
    except KeyboardInterrupt as e:
        report_uncaught(e)
        return "SIGINT"
    except BaseException as e:
        return report_uncaught(e)
    return 0


def exit_status(code):
    """sys.exit() semantics: None is 0, an int is itself, anything else is printed
    to stderr and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    try:
        sys.stderr.write("%s\n" % (code,))
    except Exception:
        pass
    return 1


def is_ours(filename):
    return (
        filename == THIS_FILE
        or filename == "<frozen runpy>"
        or os.path.basename(filename) == "runpy.py"
    )


def is_import_machinery(filename):
    return (
        filename == THIS_FILE
        or filename.startswith("<frozen importlib")
        or filename.endswith(os.path.join("importlib", "__init__.py"))
    )


def report_uncaught(e):
    """Prints the traceback python would print (without our frames); returns 1."""
    tb = e.__traceback__
    while tb is not None and is_ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    if tb is None and isinstance(e, (ImportError, OSError)):
        # The module or script itself could not be found or opened: python prints
        # one line, not a traceback.
        sys.stderr.write("%s: %s\n" % (sys.executable, e))
        return 2 if isinstance(e, OSError) else 1
    # The hook prints the exception's own traceback, so trim that one.
    e = e.with_traceback(tb)
    try:
        sys.excepthook(type(e), e, tb)
    except BaseException:
        traceback.print_exception(type(e), e, tb)
    return 1


def finish(status):
    """Interpreter shutdown, as far as a forked child can have one, then exit."""
    try:
        # Non-daemon threads the worker started keep it alive, as in python.
        threading._shutdown()
    except BaseException:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if status == "SIGINT":
        # An uncaught KeyboardInterrupt ends python with SIGINT (3.8+), so the
        # supervisor sees "killed by SIGINT", not "exited 1".
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        status = 128 + signal.SIGINT
    os._exit(status & 0xFF)


def main():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[1])
    chan = Channel(sock)
    config = json.loads(bytes(chan.read_line()).decode("utf-8"))
    fix_sys_path(config)
    preload(chan, config.get("preload") or [])
    template = Template(chan, config)
    chan.send(
        {
            "event": "ready",
            "pid": os.getpid(),
            "python": "%d.%d.%d" % sys.version_info[:3],
            "threads": [t.name for t in threading.enumerate() if t is not threading.main_thread()],
        }
    )
    template.serve()


if __name__ == "__main__":
    main()
