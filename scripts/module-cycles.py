#!/usr/bin/env python3
"""Fails when the library's top-level modules (src/*.rs and src/*/) import each other in a
cycle: every `crate::NAME` a module's code or docs names (its test module aside) is an edge.
Prints the modules of each cycle with their edges inside it."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "src")


def graph():
    mods = {}
    for dirpath, _, files in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        if rel_dir.split(os.sep)[0] == "bin":
            continue
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
            if rel == "lib.rs":
                continue
            name = rel[:-3].split(os.sep)[0]
            text = open(os.path.join(dirpath, f), encoding="utf-8").read()
            text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
            deps = set(re.findall(r"crate::([a-z_0-9]+)", text)) - {name}
            mods.setdefault(name, set()).update(deps)
    return {m: {d for d in deps if d in mods} for m, deps in mods.items()}


def cycles(g):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


g = graph()
found = cycles(g)
if found:
    for comp in found:
        print("import cycle: " + ", ".join(comp), file=sys.stderr)
        for m in comp:
            print(f"  {m} -> {', '.join(sorted(d for d in g[m] if d in comp))}", file=sys.stderr)
    sys.exit(1)
print(f"module graph: {len(g)} modules, {sum(len(d) for d in g.values())} edges, no cycle")
