"""The `command` source: prints SOAK_CMD_SECRET from a state file, or fails."""
import os
import sys

state = sys.argv[1]
if os.path.exists(os.path.join(state, "fail")):
    sys.stderr.write("soak: the secret store is down (on purpose)\n")
    sys.exit(3)
with open(os.path.join(state, "cmd_value")) as f:
    print("SOAK_CMD_SECRET=" + f.read().strip())
