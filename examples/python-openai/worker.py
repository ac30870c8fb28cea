#!/usr/bin/env python3
"""An agent worker using the real `openai` Python SDK.

The client is built at run time, inside main(), never at import time: it reads
OPENAI_API_KEY and OPENAI_BASE_URL from the environment agentsup built for this
process. Nothing is caught: a rejected key raises openai.AuthenticationError, the
interpreter prints the traceback and exits 1, and agentsup classifies the exit as
`auth` from that traceback, re-reads its sources and restarts the worker.
"""

import os
import time

from openai import OpenAI


def main():
    client = OpenAI()  # OPENAI_API_KEY and OPENAI_BASE_URL come from the environment
    model = os.environ.get("MODEL", "gpt-4o-mini")
    interval = float(os.environ.get("CALL_INTERVAL", "2"))
    n = 0
    while True:
        n += 1
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "ping %d" % n}],
        )
        print("python-openai: call %d answered %r" % (n, reply.choices[0].message.content), flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    main()
