"""agentsup.celery with a real Celery worker, a real Redis broker (redis-server
started here on a free port) and the real openai SDK against the loopback fake.

Checks what the hook promises: the worker exits with status 77 after a task's
credential was rejected, for both the solo and the prefork pool, and the failed
task's message is acknowledged (not redelivered after the visibility timeout)."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from fakeprovider import FakeProvider  # noqa: E402

try:
    import celery  # noqa: F401
    import openai  # noqa: F401
    import redis

    HAVE_CELERY = True
except ImportError:
    HAVE_CELERY = False

REQUIRE = os.environ.get("AGENTSUP_REQUIRE_ALL") == "1"
REJECTED = "sk-proj-CeleryRejected0CeleryRejected0CeleryRej"

TASKS = textwrap.dedent(
    """
    import os
    import openai
    from celery import Celery
    import agentsup.celery

    app = Celery("tasks", broker=os.environ["CELERY_BROKER_URL"])
    agentsup.celery.exit_on_auth_error(app)

    @app.task
    def ask(question):
        client = openai.OpenAI(max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
        return reply.choices[0].message.content
    """
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_redis(port, deadline):
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not answer on port %d" % port)


@unittest.skipUnless(HAVE_CELERY or REQUIRE, "celery, redis and openai are not installed")
@unittest.skipUnless(shutil.which("redis-server") or REQUIRE, "redis-server is not installed")
class CeleryHook(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        with open(os.path.join(self.dir.name, "tasks.py"), "w") as f:
            f.write(TASKS)
        self.port = free_port()
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_redis(self.port, time.monotonic() + 30)
        self.provider = FakeProvider(accepted="").__enter__()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, self.dir.name]),
            "PYTHONUNBUFFERED": "1",
            "CELERY_BROKER_URL": "redis://127.0.0.1:%d/0" % self.port,
            "OPENAI_API_KEY": REJECTED,
            "OPENAI_BASE_URL": self.provider.base_url,
        }

    def tearDown(self):
        self.provider.__exit__(None, None, None)
        self.redis.terminate()
        self.redis.wait(30)
        self.dir.cleanup()

    def enqueue(self):
        code = "from tasks import ask; ask.delay('ping')"
        subprocess.run([sys.executable, "-c", code], env=self.env, check=True, timeout=60)

    def run_worker(self, *pool_args):
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-l", "warning", *pool_args],
            env=self.env, cwd=self.dir.name, capture_output=True, text=True, timeout=120,
        )

    def assert_stopped_with_77_and_acked(self, proc):
        self.assertEqual(proc.returncode, 77, proc.stdout + proc.stderr)
        self.assertIn("provider rejected the credential", proc.stderr)
        self.assertNotIn(REJECTED, proc.stdout + proc.stderr)
        broker = redis.Redis(port=self.port, db=0)
        self.assertEqual(broker.llen("celery"), 0, "the task went back to the queue")
        self.assertEqual(broker.hlen("unacked"), 0, "the task was left unacknowledged")
        self.assertEqual(len(self.provider.calls), 1, "the task ran more than once")

    def test_solo_pool(self):
        self.enqueue()
        self.assert_stopped_with_77_and_acked(self.run_worker("--pool=solo"))

    def test_prefork_pool(self):
        self.enqueue()
        self.assert_stopped_with_77_and_acked(self.run_worker("--pool=prefork", "--concurrency=2"))


if __name__ == "__main__":
    unittest.main()
