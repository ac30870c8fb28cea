"""W6's worker: a Python agent process that imports what a LangGraph + OpenAI agent
imports (openai, langgraph, langchain_openai) and builds a client, then announces
itself on the FIFO given as argv[1] (its pid) and sleeps until signalled."""
import os
import signal
import sys

import openai  # noqa: F401
import langgraph.graph  # noqa: F401
import langchain_openai  # noqa: F401

from langchain_openai import ChatOpenAI

# Built at start-up, as agents do; no request is made. The key is a dummy.
llm = ChatOpenAI(model="gpt-4o-mini", api_key=os.environ.get("OPENAI_API_KEY", "sk-bench-dummy"))

fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
os.write(fd, b"%d\n" % os.getpid())
os.close(fd)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
while True:
    signal.pause()
