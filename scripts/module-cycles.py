#!/usr/bin/env python3
"""Cycles in the import graph of src/'s top-level modules, and modules that import
`cli` (issue 11: only the binary may).

An edge A -> B is any `crate::B` in non-comment, non-test code of module A (test
modules and `#[cfg(test)]` tails are skipped: tests may reach anywhere). Prints
each cycle (a strongly connected component of more than one module) with the
files behind its edges, and each module that imports `cli` with its files, and
exits 1 if there is either.

    python3 scripts/module-cycles.py [src-dir]
"""

import collections
import os
import re
import sys


def graph(src):
    edges = collections.defaultdict(lambda: collections.defaultdict(set))
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)
            top = rel.split("/")[0].removesuffix(".rs")
            if top in ("lib", "main") or rel.endswith("tests.rs") or "/tests" in rel:
                continue
            with open(os.path.join(root, f), encoding="utf-8") as fh:
                text = fh.read().split("#[cfg(test)]")[0]
            for line in text.splitlines():
                if line.strip().startswith("//"):
                    continue
                for m in re.finditer(r"crate::\{?\s*([a-z_]+)", line):
                    if m.group(1) != top:
                        edges[top][m.group(1)].add(rel)
    return edges


def cycles(edges):
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
    edges = graph(src)
    found = cycles(edges)
    for comp in found:
        print("cycle: " + ", ".join(comp))
        for a in comp:
            for b in sorted(edges[a]):
                if b in comp:
                    print("  %s -> %s (%s)" % (a, b, ", ".join(sorted(edges[a][b]))))
    if not found:
        print("no cycles among %d top-level modules" % len(set(edges) | {b for a in edges for b in edges[a]}))
    # The command line sits on top: the library's modules never reach up into it.
    cli_importers = sorted(a for a in edges if a != "cli" and "cli" in edges[a])
    for a in cli_importers:
        print("imports cli: %s (%s)" % (a, ", ".join(sorted(edges[a]["cli"]))))
    return 1 if found or cli_importers else 0


if __name__ == "__main__":
    sys.exit(main())
