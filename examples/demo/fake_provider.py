#!/usr/bin/env python3
"""A loopback fake of the OpenAI API, standard library only.

It accepts exactly one key: the current content of the file named by
FAKE_PROVIDER_KEY_FILE, re-read on every request, so rewriting that file "revokes"
the old key the way a real provider does after a rotation. A wrong key gets the
answer OpenAI gives (401, code invalid_api_key, the key echoed masked as
`sk-abcd****wxyz`). It logs method, path and the auth result, never a key, and
says when the accepted key changed (a rotation revoked the old one).
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY_FILE = os.environ.get("FAKE_PROVIDER_KEY_FILE", "provider/accepted_key")
PORT = int(os.environ.get("FAKE_PROVIDER_PORT", "8799"))


_log_lock = threading.Lock()


def log(line):
    # One write per line under a lock: requests are served on threads, and print()
    # writes the text and the newline separately, so two threads' lines could mix.
    with _log_lock:
        sys.stdout.write("provider: " + line + "\n")
        sys.stdout.flush()


_key_lock = threading.Lock()
_last_key = None


def accepted_key():
    """The key requests must carry now. The first caller to see a new one says so,
    before any request is answered with it: the story reads in order."""
    global _last_key
    with open(KEY_FILE, encoding="utf-8") as f:
        key = f.read().strip()
    with _key_lock:
        if _last_key is not None and key != _last_key:
            log("the accepted key changed: the old key is revoked, requests with it now get 401")
        _last_key = key
    return key


def watch_key(interval=0.2):
    """Notices a change even while no request comes in."""
    while True:
        try:
            accepted_key()
        except OSError:
            pass
        time.sleep(interval)


def openai_mask(key):
    # What api.openai.com echoes: first 8, stars, last 4 (whole key if short).
    if len(key) <= 12:
        return key
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet default logging: it would print paths only
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self):
        header = self.headers.get("Authorization", "")
        sent = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        if sent and sent == accepted_key():
            return True
        if not sent:
            message = ("You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        else:
            message = ("Incorrect API key provided: %s. You can find your API key at "
                       "https://platform.openai.com/account/api-keys." % openai_mask(sent))
        log("%s %s -> 401 (key rejected)" % (self.command, self.path))
        self._send(401, {"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": "invalid_api_key"}})
        return False

    def do_GET(self):
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            if self._authorized():
                self._send(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
            return
        self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        if not self._authorized():
            return
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            req = {}
        question = ""
        for m in req.get("messages", []):
            question = m.get("content", question)
        answer = "pong" if "ping" in str(question).lower() else "ok"
        self._send(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model", "gpt-4o-mini"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })


def main():
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    log("fake OpenAI API on http://127.0.0.1:%d/v1" % PORT)
    log("it accepts only the key in %s" % KEY_FILE)
    rotate = os.environ.get("FAKE_PROVIDER_ROTATE_HINT")
    if rotate:
        log("to rotate the key, run in another terminal: %s" % rotate)
    threading.Thread(target=watch_key, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
