"""docs/migrating.md's multiprocessing "after" example, as written there."""
import os
from openai import OpenAI
import agentsup                                     # pip install agentsup (optional)

QUESTIONS = ["What is a process group?", "What does SIGTERM mean?",
             "Why reap zombies?", "What is PID 1?"]

@agentsup.exit_on_auth_error                        # a rejected key exits 77: re-read + restart
def main():
    index = int(os.environ["AGENTSUP_REPLICA"])     # 0 .. n-1
    count = int(os.environ["AGENTSUP_REPLICAS"])    # n
    client = OpenAI()                               # built at run time, in this process;
                                                    # reads OPENAI_API_KEY and OPENAI_BASE_URL
    for question in QUESTIONS[index::count]:        # this replica's share of the work
        reply = client.chat.completions.create(
            model=os.environ.get("MODEL", "gpt-4o-mini"),
            messages=[{"role": "user", "content": question}])
        print(f"{question} -> {reply.choices[0].message.content}")

if __name__ == "__main__":
    main()
