#!/usr/bin/env python3
"""Writes a linker symbol-ordering file from callgrind runs of agentsup.

    order.py BINARY CALLGRIND_OUT... > order.txt
    order.py --verify BINARY order.txt     # after the link

Why: the kernel maps a binary's code 64 KiB at a time around each page it
touches (fault-around), and a fat-LTO build spreads what `run` executes over
nearly every 64 KiB of its 4 MB of code, so all of it counted as resident.
Listing the functions that ran first makes lld place them together, and the
rest of the code is never mapped. See scripts/build-dist.sh.

The callgrind files must come from `--dump-instr=yes --compress-pos=no` runs of
this very BINARY (symbol names are matched by address), with a dump at the fork
that starts the guard (`--dump-before='*fork'`), so that the guard's file holds
what it ran after the fork only. The guard's functions (the run that includes
agentsup::guard::guard_main) go first, so the guard maps a few blocks of its own. Two kinds of code valgrind cannot show are
added by name: the C library's CPU-specific string functions (valgrind's CPU
picks other variants than the real one) and what the vfork child runs between
clone and execve (valgrind does not follow it).
"""
import bisect
import re
import subprocess
import sys

# What src/spawn.rs's vfork_child calls, with glibc's internal names.
VFORK_CHILD = """execve _exit _Exit chdir __chdir dup2 __dup2 fcntl __fcntl fcntl64 __libc_fcntl64
getppid __getppid prctl __prctl setpgid __setpgid sigaction __sigaction __libc_sigaction
sigemptyset signal __bsd_signal sigprocmask __sigprocmask pthread_sigmask __pthread_sigmask
write __write __libc_write __errno_location""".split()
CPU_VARIANT = re.compile(r"^(__\w+?)_(sse2|sse4_?[12]|ssse3|avx2?|evex|avx512\w*|erms|unaligned\w*|rtm)")


def symbols(binary):
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True,
                         text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW" and int(p[1], 16) > 0:
            syms.append((int(p[0], 16), int(p[1], 16), p[3]))
    syms.sort()
    return syms


def executed(path, syms, starts):
    """Names of the functions with an instruction address in one callgrind file."""
    names = set()
    addr = re.compile(r"^0x([0-9a-f]+)\s")
    with open(path, errors="replace") as f:
        for line in f:
            m = addr.match(line)
            if not m:
                continue
            a = int(m.group(1), 16)
            i = bisect.bisect_right(starts, a) - 1
            if i >= 0 and a < syms[i][0] + syms[i][1]:
                names.add(syms[i][2])
    return names


def verify(binary, order_file):
    """Exits non-zero unless the listed functions sit together at the start of
    the code: the link ignores unknown names silently, so a rename or a changed
    symbol hash would otherwise go unnoticed."""
    syms = symbols(binary)
    listed = set(line.strip() for line in open(order_file) if line.strip())
    mine = [(a, s) for a, s, n in syms if n in listed]
    if len(mine) < len(listed) // 2:
        sys.exit(f"order.py: only {len(mine)} of {len(listed)} listed functions are in {binary}")
    first = min(a for a, _ in mine)
    size = sum(s for _, s in mine)
    # A few may stay behind (a symbol sharing its section with code placed
    # elsewhere); what matters is that nearly all of it is in one block of code.
    near = sum(s for a, s in mine if a + s <= first + 1.2 * size)
    if near < 0.95 * size:
        sys.exit(f"order.py: only {near} of the {size} bytes of listed functions sit together "
                 "at the start of the code: the symbol ordering did not take effect")
    print(f"order.py: {near} of {size} bytes of {len(mine)} listed functions placed together",
          file=sys.stderr)


def main():
    if sys.argv[1] == "--verify":
        return verify(sys.argv[2], sys.argv[3])
    binary, runs = sys.argv[1], sys.argv[2:]
    syms = symbols(binary)
    starts = [s[0] for s in syms]
    at = {n: a for a, _, n in syms}
    guard, rest = set(), set()
    for path in runs:
        names = executed(path, syms, starts)
        (guard if any("5guard10guard_main" in n for n in names) else rest).update(names)
    if not guard:
        # No guard ran (agentsup as PID 1, or more than one thread at start):
        # the layout still serves agentsup itself.
        print("order.py: warning: no run of the guard found (is guard_main still "
              "#[inline(never)]?); its code is not placed first", file=sys.stderr)
    extra = set(VFORK_CHILD)
    bases = {m.group(1) for n in guard | rest if (m := CPU_VARIANT.match(n))}
    extra.update(n for n in at if any(n.startswith(b + "_") for b in bases))
    seen = set()
    for group in (guard, rest, extra):
        for n in sorted(group - seen, key=lambda n: at.get(n, 0)):
            if n in at:
                print(n)
        seen |= group
    print(f"order.py: {len(seen & set(at))} functions, {len(guard)} of them the guard's",
          file=sys.stderr)


if __name__ == "__main__":
    main()
