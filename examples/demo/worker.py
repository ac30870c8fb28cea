#!/usr/bin/env python3
"""A demo agent worker, standard library only: asks the provider a question every
two seconds with the key agentsup injected. Like the real SDKs, a rejected key
raises an AuthenticationError and the process exits 1 with the traceback, which
agentsup classifies as an auth failure."""

import json
import os
import time
import urllib.error
import urllib.request


class AuthenticationError(Exception):
    """Named like openai.AuthenticationError, so the same signature matches."""


def ask(base, key, question):
    req = urllib.request.Request(
        base.rstrip("/") + "/chat/completions",
        data=json.dumps({"model": os.environ.get("MODEL", "gpt-4o-mini"),
                         "messages": [{"role": "user", "content": question}]}).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)["choices"][0]["message"]["content"]
    except urllib.error.HTTPError as e:
        body = json.load(e)
        if e.code == 401:
            raise AuthenticationError("Error code: 401 - %s" % body["error"]["message"]) from None
        raise


def main():
    base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    key = os.environ["OPENAI_API_KEY"]
    name = "%s.%s" % (os.environ.get("AGENTSUP_WORKER"), os.environ.get("AGENTSUP_REPLICA"))
    # Printing the key shows redaction at work: agentsup replaces it before it reaches the log.
    print("%s starting; my key is %s" % (name, key), flush=True)
    n = 0  # calls the provider answered; a refused connection is not one
    while True:
        try:
            answer = ask(base, key, "ping %d" % (n + 1))
        except urllib.error.URLError as e:
            if isinstance(e, urllib.error.HTTPError):
                raise
            print("provider not reachable yet (%s); retrying" % e.reason, flush=True)
            time.sleep(1)
            continue
        n += 1
        print("call %d: provider answered %r" % (n, answer), flush=True)
        time.sleep(float(os.environ.get("CALL_INTERVAL", "2")))


if __name__ == "__main__":
    main()
