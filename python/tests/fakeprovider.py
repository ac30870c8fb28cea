"""An in-process loopback fake of the OpenAI API for the helper's tests: it answers
401 (the OpenAI wording) to every key but ``accepted``, and 429 when asked to."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeProvider:
    def __init__(self, accepted: str = "", status_for_others: int = 401) -> None:
        self.accepted = accepted
        self.status_for_others = status_for_others
        self.calls = []  # (key, status)
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                sent = self.headers.get("Authorization", "")[len("Bearer "):]
                if sent == provider.accepted and sent:
                    status, body = 200, {
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                        "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "pong"}}],
                    }
                elif provider.status_for_others == 429:
                    status, body = 429, {"error": {"message": "Rate limit reached",
                                                   "type": "requests", "code": "rate_limit_exceeded"}}
                else:
                    status, body = 401, {"error": {
                        "message": "Incorrect API key provided: %s****. You can find your API key at "
                                   "https://platform.openai.com/account/api-keys." % sent[:4],
                        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
                provider.calls.append((sent, status))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = "http://127.0.0.1:%d/v1" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
