"""``python -m agentsup ARGS``: runs the agentsup binary installed with this package."""

import os
import shutil
import sys
import sysconfig


def _binary() -> str:
    scripts = sysconfig.get_path("scripts")
    candidate = os.path.join(scripts, "agentsup") if scripts else ""
    if candidate and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("agentsup")
    if found:
        return found
    sys.stderr.write(
        "agentsup: the agentsup binary is not installed next to this Python package "
        "(looked in %s and on PATH); install the wheel with `pip install agentsup`\n" % scripts
    )
    sys.exit(127)


if __name__ == "__main__":
    binary = _binary()
    os.execv(binary, [binary, *sys.argv[1:]])
