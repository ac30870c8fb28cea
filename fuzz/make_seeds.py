#!/usr/bin/env python3
"""Writes the seed inputs under fuzz/corpus/<target>/seed-*.

Every target reads a first byte that picks its mode (see each target's header);
raw-mode seeds are that byte followed by real input: the dotenv conformance cases
(/work/shared/conformance/dotenv_cases.json when present), the repo's TOML configs,
JSON a secret tool prints, control and fork protocol lines. Re-run it after changing
a target's input layout; libFuzzer's own finds are merged in beside these.
"""
import glob
import hashlib
import json
import os

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def put(target, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# dotenv: raw (mode 0) from the conformance cases, plus a few of the other modes.
cases = "/work/shared/conformance/dotenv_cases.json"
if os.path.exists(cases):
    for c in json.load(open(cases))["cases"]:
        put("dotenv", b"\x00" + c["input"].encode())
for s in [b"A=1\nB='two'\nC=\"th\\nree\"\nexport D=4 # c\n", b"K=\"multi\nline\"\n", b"\xef\xbb\xbfA=1\r\n"]:
    put("dotenv", b"\x00" + s)
for s in [b"\x01" + "a\"b'c\\d$e\nf\r\tg é".encode(), b"\x02" + bytes(range(64))]:
    put("dotenv", s)

# config: raw (mode 0) from every TOML config in the repo and the docs' snippets.
tomls = [p for p in glob.glob(os.path.join(REPO, "**", "*.toml"), recursive=True)
         if "/target" not in p and os.path.basename(p) not in ("Cargo.toml", "clippy.toml")
         and "/fuzz/" not in p]
for p in tomls:
    put("config", b"\x00" + open(p, "rb").read())
put("config", b"\x00[env]\nvars = { A = \"x\", N = 3 }\n[[worker]]\nname = \"w\"\ncommand = [\"x\"]\nvars = { S = \"sk-1\" }\nreplicas = \"4\"\n")
put("config", b"\x01" + bytes(range(1, 200)))

# json_source: mode 0, pointer choice 0 (none) or 2 (/data/data), then stdout.
for ptr, doc in [(0, b'{"OPENAI_API_KEY":"sk-x","N":3,"ok":true,"bad-name":"v","O":{}}'),
                 (2, b'{"data":{"data":{"A":"1","B":[1,2]}}}'),
                 (0, b'["not an object"]'), (0, b'{"A": "unterminated'), (4, b'[{"A":"b"}]')]:
    put("json_source", bytes([0, ptr]) + doc)
put("json_source", b"\x01" + bytes(range(0, 120)))

# control_wire: requests and answers as they travel.
for line in [b'{"cmd":"status"}', b'{"cmd":"restart","target":"planner.1"}', b'{"cmd":"reload"}',
             b'{"ok":true,"message":"restarting planner.1 (one at a time)","status":null}',
             b'{"ok":true,"message":"1 replica(s)","status":{"config":"/s.toml","pid":7,"uptime_secs":1.5,'
             b'"replicas":[{"worker":"p","replica":0,"pid":9,"state":"running","uptime_secs":0.5,'
             b'"restarts":1,"last_exit":"auth"}],"counters":{"restarts":{"p":{"auth":1}},'
             b'"auth_failures":{"p":1},"secret_reloads":0,"secret_reload_failures":0},"shutting_down":false}}',
             b'{"ok":false,"message":"no such worker"}']:
    put("control_wire", line)

# fork_proto: template messages (mode 0), and request material (mode 1).
for line in [b'{"event":"ready","pid":9,"python":"3.12.1","threads":["t"]}',
             b'{"event":"preload_failed","module":"m","traceback":"T"}',
             b'{"event":"forked","id":1,"pid":42}', b'{"event":"fork_failed","id":2,"error":"e"}',
             b'{"event":"exit","pid":5,"code":3}', b'{"event":"exit","pid":5,"signal":9}']:
    put("fork_proto", b"\x00" + line + b"\n")
put("fork_proto", b"\x01" + "argv\tcwd\nenv\u00e9\"\\".encode() * 4)

# frame and redact: text with line ends of every kind, and secrets in it.
put("frame", b"\x10\x03\x20\x05" + b"line one\nline two\r\nx" * 20 + b"\n" * 5)
put("redact", b"\x02" + b"sk-abcdef123456\x00" * 3 + b"text sk-abcdef123456 more\n" * 8)
