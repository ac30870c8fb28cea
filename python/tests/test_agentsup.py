"""Tests of the worker-side package, with the real openai SDK against a loopback fake.

Each scenario runs in a real child interpreter, because what is under test is how
that process ends (its exit status and what it printed before)."""

import os
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
sys.path.insert(0, PACKAGE_ROOT)
sys.path.insert(0, HERE)

import agentsup  # noqa: E402
from fakeprovider import FakeProvider  # noqa: E402

REJECTED = "sk-proj-Rejected0Rejected0Rejected0Rejected0xyz"
ACCEPTED = "sk-proj-Accepted1Accepted1Accepted1Accepted1abc"

try:
    import openai  # noqa: F401

    HAVE_OPENAI = True
except ImportError:  # pragma: no cover - the CI venv has it
    HAVE_OPENAI = False


def run_worker(body, base_url, key=REJECTED, extra_env=None, timeout=60):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": PACKAGE_ROOT,
        "PYTHONUNBUFFERED": "1",
        "OPENAI_API_KEY": key,
        "OPENAI_BASE_URL": base_url,
    }
    env.update(extra_env or {})
    script = "import agentsup, openai\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )


def call_provider():
    return textwrap.dedent(
        """
        def call():
            client = openai.OpenAI(max_retries=0)
            return client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
        """
    )


@unittest.skipUnless(HAVE_OPENAI, "the openai package is not installed")
class ExitOnAuthErrorWithRealSdk(unittest.TestCase):
    def setUp(self):
        self.provider = FakeProvider(accepted=ACCEPTED).__enter__()

    def tearDown(self):
        self.provider.__exit__(None, None, None)

    def assert_auth_exit(self, proc):
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("AuthenticationError", proc.stderr)
        self.assertIn("exiting with status 77", proc.stderr)

    def test_uncaught_in_main_thread(self):
        proc = run_worker(call_provider() + "agentsup.exit_on_auth_error()\ncall()\n", self.provider.base_url)
        self.assert_auth_exit(proc)

    def test_uncaught_in_a_thread_ends_the_process(self):
        body = call_provider() + textwrap.dedent(
            """
            import threading, time
            agentsup.exit_on_auth_error()
            threading.Thread(target=call).start()
            time.sleep(60)  # without the hook the main thread would go on running
            """
        )
        self.assert_auth_exit(run_worker(body, self.provider.base_url))

    def test_unawaited_asyncio_task(self):
        body = textwrap.dedent(
            """
            import asyncio, gc
            async def call():
                client = openai.AsyncOpenAI(max_retries=0)
                await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
            async def main():
                agentsup.exit_on_auth_error()
                task = asyncio.create_task(call())
                await asyncio.sleep(0.5)
                while not task.done():
                    await asyncio.sleep(0.05)
                del task
                gc.collect()  # the loop reports an unretrieved task exception on collection
                await asyncio.sleep(60)
            asyncio.run(main())
            """
        )
        self.assert_auth_exit(run_worker(body, self.provider.base_url))

    def test_decorator_on_async_main(self):
        body = textwrap.dedent(
            """
            import asyncio
            @agentsup.exit_on_auth_error
            async def main():
                client = openai.AsyncOpenAI(max_retries=0)
                await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
            asyncio.run(main())
            """
        )
        self.assert_auth_exit(run_worker(body, self.provider.base_url))

    def test_context_manager_even_when_the_caller_swallows_errors(self):
        body = call_provider() + textwrap.dedent(
            """
            try:
                with agentsup.exit_on_auth_error():
                    call()
            except Exception:
                pass
            print("kept running")
            """
        )
        proc = run_worker(body, self.provider.base_url)
        self.assert_auth_exit(proc)
        self.assertNotIn("kept running", proc.stdout)

    def test_accepted_key_runs_normally(self):
        body = call_provider() + "agentsup.exit_on_auth_error()\nprint(call().choices[0].message.content)\n"
        proc = run_worker(body, self.provider.base_url, key=ACCEPTED)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("pong", proc.stdout)

    def test_other_errors_keep_their_status(self):
        body = "agentsup.exit_on_auth_error()\nraise ValueError('not a credential problem')\n"
        proc = run_worker(body, self.provider.base_url)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("ValueError", proc.stderr)

    def test_quota_is_not_an_auth_failure(self):
        with FakeProvider(accepted="", status_for_others=429) as quota:
            proc = run_worker(call_provider() + "agentsup.exit_on_auth_error()\ncall()\n", quota.base_url)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("RateLimitError", proc.stderr)

    def test_custom_code_from_environment(self):
        proc = run_worker(
            call_provider() + "agentsup.exit_on_auth_error()\ncall()\n",
            self.provider.base_url,
            extra_env={"AGENTSUP_AUTH_EXIT_CODE": "70"},
        )
        self.assertEqual(proc.returncode, 70, proc.stderr)


class Recognition(unittest.TestCase):
    def test_wrapped_and_grouped_errors(self):
        class AuthenticationError(Exception):
            pass

        try:
            try:
                raise AuthenticationError("401")
            except AuthenticationError as inner:
                raise RuntimeError("agent step failed") from inner
        except RuntimeError as outer:
            self.assertTrue(agentsup.is_auth_error(outer))
        if sys.version_info >= (3, 11):
            group = ExceptionGroup("tasks", [ValueError("x"), AuthenticationError("401")])  # noqa: F821
            self.assertTrue(agentsup.is_auth_error(group))

    def test_not_auth(self):
        self.assertFalse(agentsup.is_auth_error(ValueError("401 in a message is not enough")))
        self.assertFalse(agentsup.is_auth_error(None))

        class PermissionDeniedError(Exception):
            status_code = 403

        self.assertFalse(agentsup.is_auth_error(PermissionDeniedError()))


class KeyAndWorker(unittest.TestCase):
    def setUp(self):
        self.saved = dict(os.environ)

    def tearDown(self):
        os.environ.clear()
        os.environ.update(self.saved)

    def test_worker_identity(self):
        for name in ("AGENTSUP_WORKER", "AGENTSUP_REPLICA", "AGENTSUP_REPLICAS"):
            os.environ.pop(name, None)
        self.assertIsNone(agentsup.worker())
        os.environ.update(AGENTSUP_WORKER="planner", AGENTSUP_REPLICA="2", AGENTSUP_REPLICAS="4")
        self.assertEqual(agentsup.worker(), agentsup.Worker("planner", 2, 4))

    def test_key_from_environment_and_missing_key(self):
        os.environ.pop("AGENTSUP_KEYS_DIR", None)
        os.environ["SOME_TEST_KEY"] = "value-one"
        self.assertEqual(agentsup.key("SOME_TEST_KEY"), "value-one")
        with self.assertRaises(agentsup.KeyNotAvailable) as caught:
            agentsup.key("NOT_DECLARED_KEY")
        self.assertIn("declare it", str(caught.exception))

    def test_key_file_is_reread_when_replaced(self):
        with tempfile.TemporaryDirectory() as keys:
            os.environ["AGENTSUP_KEYS_DIR"] = keys
            os.environ["ROTATING_KEY"] = "stale-environment-value"
            path = os.path.join(keys, "ROTATING_KEY")
            with open(path, "w") as f:
                f.write("first-value")
            self.assertEqual(agentsup.key("ROTATING_KEY"), "first-value")
            # Atomic replacement, as agentsup does it: a new inode under the same name.
            tmp = path + ".new"
            with open(tmp, "w") as f:
                f.write("second-value")
            os.replace(tmp, path)
            self.assertEqual(agentsup.key("ROTATING_KEY"), "second-value")
            os.unlink(path)
            self.assertEqual(agentsup.key("ROTATING_KEY"), "stale-environment-value")


if __name__ == "__main__":
    unittest.main()
