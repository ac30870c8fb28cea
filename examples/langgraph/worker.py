#!/usr/bin/env python3
"""An agent worker built with LangGraph and langchain-openai's ChatOpenAI.

A one-node graph ("ask") calls the chat model in a loop. The model is built at run
time, inside main(): ChatOpenAI reads OPENAI_API_KEY (and the openai client under
it OPENAI_BASE_URL) from the environment agentsup built for this process. Nothing
is caught: a rejected key raises langchain_openai's OpenAIAuthenticationError
(chained from openai.AuthenticationError), the interpreter prints both tracebacks
and exits 1, and agentsup classifies the exit as `auth`.
"""

import os
import time
from typing import TypedDict

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    question: str
    answer: str


def build_graph():
    llm = ChatOpenAI(model=os.environ.get("MODEL", "gpt-4o-mini"))

    def ask(state: State) -> dict:
        return {"answer": llm.invoke(state["question"]).content}

    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    return graph.compile()


def main():
    graph = build_graph()
    interval = float(os.environ.get("CALL_INTERVAL", "2"))
    n = 0
    while True:
        n += 1
        result = graph.invoke({"question": "ping %d" % n, "answer": ""})
        print("langgraph: call %d answered %r" % (n, result["answer"]), flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    main()
