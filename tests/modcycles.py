#!/usr/bin/python3
"""modcycles.py — fails when focald's server modules depend on each other in a cycle.

A module is a .c file of server/ and the .h of the same name (a header without a .c, such as
api_internal.h, is a module of its own). Module A depends on module B when

  - A's object file uses a global symbol that B's object file defines (a call, or a reference to a
    function or a variable: `nm` lists it as undefined in A and defined in B), or
  - A's .c or .h has `#include "b.h"`.

The graph's strongly connected components of more than one module are cycles: each is printed with
the edges that make it (the symbols or the include lines), and the exit status is 1. Objects come
from $BUILD/server/*.o (generated objects such as gen_schema.o are modules too), sources from
server/.

usage: tests/modcycles.py [--build DIR] [--src DIR]
       tests/modcycles.py --self-test   plants cycles in small made-up modules and checks each is found
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)\.h"', re.M)


def module_of(path):
    return os.path.splitext(os.path.basename(path))[0]


def symbol_edges(objects):
    """{(a, b): [symbols]} for module a using a global symbol module b defines."""
    defined, used = {}, {}
    for obj in objects:
        mod = module_of(obj)
        out = subprocess.run(["nm", "-P", obj], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            f = line.split()
            if len(f) < 2:
                continue
            name, kind = f[0], f[1]
            if kind in ("U", "w"):
                used.setdefault(mod, set()).add(name)
            elif kind in ("T", "D", "B", "R", "C", "V", "W", "G", "S"):
                defined.setdefault(name, mod)
    edges = {}
    for mod, names in used.items():
        for name in names:
            other = defined.get(name)
            if other is not None and other != mod:
                edges.setdefault((mod, other), []).append(name)
    return edges


def include_edges(src):
    """{(a, b): [lines]} for a .c or .h of module a including b.h, when b.h is in src."""
    headers = {module_of(f) for f in os.listdir(src) if f.endswith(".h")}
    edges = {}
    for f in sorted(os.listdir(src)):
        if not f.endswith((".c", ".h")):
            continue
        with open(os.path.join(src, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for m in INCLUDE.finditer(text):
            target = os.path.basename(m.group(1))
            if target in headers and target != module_of(f):
                edges.setdefault((module_of(f), target), []).append(f'{f}: #include "{target}.h"')
    return edges


def cycles(edges):
    """The strongly connected components of more than one node (Tarjan's algorithm, iteratively)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def check(build, src, out=sys.stdout):
    """Prints the cycles among the modules of src built into build/server; returns how many."""
    objdir = os.path.join(build, "server")
    objects = sorted(os.path.join(objdir, f) for f in os.listdir(objdir) if f.endswith(".o"))
    if not objects:
        print(f"no objects in {objdir}: build first", file=out)
        return -1
    edges = symbol_edges(objects)
    for key, lines in include_edges(src).items():
        edges.setdefault(key, []).extend(lines)
    found = cycles(edges)
    modules = {m for e in edges for m in e}
    for comp in found:
        print(f"cycle among {len(comp)} modules: {' '.join(comp)}", file=out)
        members = set(comp)
        for (a, b), why in sorted(edges.items()):
            if a in members and b in members:
                shown = sorted(why)
                more = f" (+{len(shown) - 6} more)" if len(shown) > 6 else ""
                print(f"  {a} -> {b}: {', '.join(shown[:6])}{more}", file=out)
    if not found:
        print(f"no cycle among {len(modules)} modules ({len(edges)} dependencies)", file=out)
    return len(found)


# ---------------------------------------------------------------------------- self-test

PLANTS = {
    # three modules calling round in a ring: a -> b -> c -> a
    "calls": {
        "a.h": "void a_f(void);\n", "a.c": '#include "a.h"\n#include "b.h"\nvoid a_f(void) { b_f(); }\n',
        "b.h": "void b_f(void);\n", "b.c": '#include "b.h"\n#include "c.h"\nvoid b_f(void) { c_f(); }\n',
        "c.h": "void c_f(void);\n",
        "c.c": 'void a_f(void);\nvoid c_f(void);\nvoid c_f(void) { a_f(); }\n',  # declares a_f itself: no include
    },
    # a table of function pointers in one module, the function's module reading the table's variable
    "data": {
        "t.h": "extern void (*const t_table[])(void);\n", "t.c": '#include "t.h"\n#include "u.h"\nvoid (*const t_table[])(void) = {u_f};\n',
        "u.h": "void u_f(void);\n", "u.c": 'extern void (*const t_table[])(void);\nvoid u_f(void);\nvoid u_f(void) { t_table[0](); }\n',
    },
    # headers only: p.h includes q.h, q.c includes p.h, nothing calls across
    "includes": {
        "p.h": '#include "q.h"\n', "p.c": "int p_x;\n",
        "q.h": "", "q.c": '#include "p.h"\nint q_x;\n',
    },
    # no cycle: x -> y -> z
    "none": {
        "x.h": "void x_f(void);\n", "x.c": '#include "x.h"\n#include "y.h"\nvoid x_f(void) { y_f(); }\n',
        "y.h": "void y_f(void);\n", "y.c": '#include "y.h"\n#include "z.h"\nvoid y_f(void) { z_f(); }\n',
        "z.h": "void z_f(void);\n", "z.c": '#include "z.h"\nvoid z_f(void) {}\n',
    },
}
WANT = {"calls": [["a", "b", "c"]], "data": [["t", "u"]], "includes": [["p", "q"]], "none": []}


def self_test():
    cc = os.environ.get("CC") or "cc"
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, files in PLANTS.items():
            src = os.path.join(tmp, name, "server")
            objdir = os.path.join(tmp, name, "build", "server")
            os.makedirs(src)
            os.makedirs(objdir)
            for f, text in files.items():
                with open(os.path.join(src, f), "w") as fh:
                    fh.write(text)
            for f in files:
                if f.endswith(".c"):
                    subprocess.run([cc, "-c", "-I", src, os.path.join(src, f), "-o",
                                    os.path.join(objdir, module_of(f) + ".o")], check=True)
            edges = symbol_edges(sorted(os.path.join(objdir, f) for f in os.listdir(objdir)))
            for key, lines in include_edges(src).items():
                edges.setdefault(key, []).extend(lines)
            got = cycles(edges)
            status = check(os.path.join(tmp, name, "build"), src, out=open(os.devnull, "w"))
            ok = got == WANT[name] and (status > 0) == bool(WANT[name])
            print(f"{'ok' if ok else 'not ok'} - planted {name}: found {got or 'no cycle'}")
            failed += not ok
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"))
    ap.add_argument("--src", default="server")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if not shutil.which("nm"):
        print("nm is missing (binutils)")
        return 2
    if args.self_test:
        return 1 if self_test() else 0
    n = check(args.build, args.src)
    return 0 if n == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
