#!/usr/bin/env python3
"""Checks that crate-private modules never import each other (issue 12).

Reads every file under src/ (the library; src/bin is a client of the public
API), strips comments, and collects the modules each file names: `use`
paths (brace groups expanded), and `crate::`/`super::` paths in code. Test
code is exempt (files named tests.rs or *_tests.rs, folders named tests,
and `#[cfg(test)] mod ... { }` blocks): a test may build a whole store.

Rules:
1. The top-level modules (`crate::store`, `crate::ops`, ...) form no cycle.
2. The operation files of src/ops import no other operation file: only the
   leaves the rules below name, and `ops/mod.rs` (`super::Store`).
Prints every violation and exits 1 if there is one.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Modules of src/ops every operation file may use.
OPS_LEAVES = {"steps", "reads", "config", "faults", "mail_signal"}


def module_path(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def is_test_file(rel):
    parts = rel[:-3].split(os.sep)
    return any(p == "tests" or p.endswith("_tests") for p in parts)


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    return text


def drop_test_blocks(text):
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\((all\()?test[^\]]*\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand(path):
    """`a::{b, c::{d}}` -> [`a::b`, `a::c::d`]."""
    m = re.match(r"^([^{]*)\{(.*)\}$", path.strip(), re.S)
    if not m:
        return [path.strip()]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    items.append(cur)
    return [p for it in items if it.strip() for p in expand(prefix + it.strip())]


def referenced(text, here):
    """Absolute module paths (lists) that `text`, in module `here`, names."""
    refs = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        refs += expand(re.sub(r"\s+", "", m.group(1)))
    refs += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
    out = []
    for r in refs:
        segs = [s for s in r.split("::") if s]
        if not segs:
            continue
        if segs[0] == "crate":
            out.append(segs[1:])
        elif segs[0] == "super":
            base = list(here)
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            out.append(base + segs)
        elif segs[0] == "self":
            out.append(list(here) + segs[1:])
    return [o for o in out if o]


def main():
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        for n in names:
            if not n.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, n), ROOT)
            if rel.startswith("bin" + os.sep) or is_test_file(rel):
                continue
            text = drop_test_blocks(strip(open(os.path.join(dirpath, n)).read()))
            files[rel] = (module_path(rel), text)
    top = {mp[0] for mp, _ in files.values() if mp}
    problems = []
    graph = {}
    for rel, (mp, text) in sorted(files.items()):
        if not mp:
            continue
        for ref in referenced(text, mp):
            if ref[0] in top and ref[0] != mp[0]:
                graph.setdefault(mp[0], {}).setdefault(ref[0], rel)
        if len(mp) == 2 and mp[0] == "ops" and mp[1] not in OPS_LEAVES:
            for ref in referenced(text, mp):
                if (len(ref) >= 2 and ref[0] == "ops" and ref[1] != mp[1]
                        and ref[1] not in OPS_LEAVES and (ref[1], ) != ()):
                    other = os.path.join(ROOT, "ops", ref[1] + ".rs")
                    other_dir = os.path.join(ROOT, "ops", ref[1])
                    if os.path.exists(other) or os.path.isdir(other_dir):
                        problems.append(f"{rel}: operation file imports ops::{ref[1]}")
    # Cycles among top-level modules.
    def reach(a, b, seen):
        if a == b:
            return [b]
        for n in sorted(graph.get(a, {})):
            if n not in seen:
                seen.add(n)
                p = reach(n, b, seen)
                if p:
                    return [a] + p
        return None
    for a in sorted(graph):
        for b in sorted(graph[a]):
            back = reach(b, a, {b})
            if back:
                chain = " -> ".join([a] + back)
                problems.append(f"cycle {chain} (first edge in {graph[a][b]})")
    for p in sorted(set(problems)):
        print(p)
    if "-v" in sys.argv:
        for a in sorted(graph):
            print(f"{a} -> {', '.join(sorted(graph[a]))}")
    if problems:
        sys.exit(1)
    print(f"layers: {len(files)} files, {len(top)} top-level modules, no import cycle")


main()
