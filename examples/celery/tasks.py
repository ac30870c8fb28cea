"""The Celery app of this example: two tasks, one of which calls the provider.

Broker and result backend come from the environment agentsup builds (declared as
keys in supervisor.toml), never from a file the worker reads itself.
"""

import os
import time

import openai
from celery import Celery

import agentsup.celery

app = Celery(
    "tasks",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ.get("CELERY_RESULT_BACKEND"),
)
app.conf.update(
    # Acknowledge a message when its task has finished (success or failure), not
    # when it is received: a worker killed mid-task (the stop timeout ran out, the
    # OOM killer) leaves the message to be delivered again.
    task_acks_late=True,
    # With the prefork pool, a child that dies mid-task makes Celery requeue the
    # message at once instead of marking the task failed (WorkerLostError).
    task_reject_on_worker_lost=True,
    # One task at a time per process: a stopping worker holds no reserved messages.
    worker_prefetch_multiplier=1,
)

# A task whose provider rejected the key stops this worker with status 77 through a
# warm shutdown (the task's bookkeeping finishes first); agentsup classifies that as
# an auth failure, re-reads the secrets and restarts the worker with the new key.
agentsup.celery.exit_on_auth_error(app)


@app.task
def slow(seconds):
    print("task started", flush=True)
    time.sleep(seconds)
    return "slept %d" % seconds


@app.task
def ask(question):
    # Built here, in the worker process, at call time: it reads OPENAI_API_KEY and
    # OPENAI_BASE_URL from the environment this process was started with.
    client = openai.OpenAI(max_retries=0)
    reply = client.chat.completions.create(
        model=os.environ.get("MODEL", "gpt-4o-mini"),
        messages=[{"role": "user", "content": question}],
    )
    print("task answered", flush=True)
    return reply.choices[0].message.content
