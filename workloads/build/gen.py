#!/usr/bin/env python3
"""Generate a self-contained C source tree for a `make -jN` load-balancing workload.

The tree stands in for a kernel compile: many translation units of uneven
size (some 3-5x heavier than others, as in real trees: that imbalance is what
makes load balancing matter), two shared headers, a main.c and a Makefile that
compiles every .c to .o and links one binary. The code gives `gcc -O2` real
work (bytecode-interpreter switches, struct arrays with sorting, inline
helpers, small matrix loops, character-class scanners) and uses nothing beyond
libc; it compiles warning-free with `gcc -O2 -Wall` and the binary prints a
checksum and exits 0.

Output is a pure function of the arguments (own PRNG, no clock, no hashing of
unordered containers): the same arguments write byte-identical files. File i
depends only on (seed, i, scale), so --files only adds or removes files.

    python3 gen.py --out DIR [--files 96] [--scale 1.0] [--seed 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

GENERATOR_VERSION = 1
MASK64 = (1 << 64) - 1
# Lines of C per unit of weight at --scale 1; a weight-1 file is the lightest.
LINES_PER_WEIGHT = 120
PROGRAM = "buildload"


class Rng:
    """splitmix64: tiny, and stable across Python versions (unlike `random`'s helpers)."""

    def __init__(self, *seeds: int) -> None:
        self.state = 0x9E3779B97F4A7C15
        for s in seeds:  # through the output mix, so (seed, index) pairs do not collide
            self.state = self.next() ^ (s & MASK64)

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def between(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return lo + self.below(hi - lo + 1)

    def uniform(self) -> float:
        return (self.next() >> 11) / float(1 << 53)

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def u32(self) -> str:
        return f"0x{self.next() & 0xFFFFFFFF:08x}u"

    def odd32(self) -> str:
        return f"0x{(self.next() & 0xFFFFFFFF) | 1:08x}u"


def file_weight(seed: int, index: int) -> float:
    """Relative size of translation unit `index`, in [1, 5]: most are light, a few heavy.

    1 + 4u^3 for uniform u: median ~1.5, mean 2, about 20% of files above 3.
    """
    u = Rng(seed, 0x5745494748, index).uniform()
    return 1.0 + 4.0 * u ** 3


# --- expressions --------------------------------------------------------------

def expr(rng: Rng, leaves: list[str], depth: int) -> str:
    """A fully parenthesised uint32_t expression over `leaves` (all uint32_t)."""
    if depth <= 0 or rng.below(4) == 0:
        return rng.choice(leaves) if rng.below(5) else rng.u32()
    a = expr(rng, leaves, depth - 1)
    k = rng.below(13)
    if k < 6:
        op = ("+", "-", "*", "^", "&", "|")[k]
        return f"({a} {op} {expr(rng, leaves, depth - 1)})"
    if k == 6:
        return f"({a} << {rng.between(1, 31)})"
    if k == 7:
        return f"({a} >> {rng.between(1, 31)})"
    if k == 8:
        return f"rotl32({a}, {rng.between(1, 31)})"
    if k == 9:
        return f"mix32({a})"
    if k == 10:
        op = rng.choice(("/", "%"))
        return f"({a} {op} ({expr(rng, leaves, depth - 1)} | 1u))"
    if k == 11:
        # Relational, a variable against a mid-range constant: `x > x` or
        # `(x | 1) == 2` would be -Wtautological-compare warnings, `x < 0` or a
        # constant-only operand -Wtype-limits ones (-Wextra).
        cmp = rng.choice(("<", ">", "<=", ">="))
        return (f"((({a} ^ {rng.choice(leaves)}) {cmp} 0x{rng.between(0x100, 0xFFFFFF00):08x}u) ? {expr(rng, leaves, depth - 1)} "
                f": {expr(rng, leaves, depth - 1)})")
    return f"({a} * {rng.odd32()})"


def cond(rng: Rng, leaves: list[str]) -> str:
    v = rng.choice(leaves)
    m = (1 << rng.between(1, 5)) - 1
    return f"(({v} & {m}u) == {rng.below(m + 1)}u)"


# --- blocks: each is one function (plus its helpers/tables) -------------------

class Block:
    def __init__(self, name: str, ret: str, lines: list[str]) -> None:
        self.name, self.ret, self.lines = name, ret, lines


def block_interp(rng: Rng, name: str) -> Block:
    """A register-machine interpreter: a big switch in a loop over a constant program."""
    ncase = rng.between(8, 28)
    plen = rng.between(24, 64)
    regs = [f"r{i}" for i in range(8)]
    prog = [rng.below(ncase + 2) for _ in range(plen)]
    out = [f"static const uint8_t {name}_prog[{plen}] = {{"]
    for i in range(0, plen, 16):
        out.append("    " + ", ".join(str(b) for b in prog[i:i + 16]) + ",")
    out.append("};")
    out.append("")
    out.append(f"static uint32_t {name}(uint32_t seed)")
    out.append("{")
    inits = ["seed"] + [f"mix32(seed + {rng.u32()})" for _ in range(7)]
    for r, init in zip(regs, inits):
        out.append(f"    uint32_t {r} = {init};")
    out.append("    uint32_t pc = 0, step;")
    out.append("")
    out.append(f"    for (step = 0; step < {rng.between(64, 256)}u; step++) {{")
    out.append(f"        switch ({name}_prog[pc]) {{")
    leaves = regs + ["step"]
    for c in range(ncase):
        out.append(f"        case {c}:")
        for _ in range(rng.between(1, 3)):
            dst = rng.choice(regs)
            out.append(f"            {dst} = {expr(rng, leaves, rng.between(2, 4))};")
        if rng.below(4) == 0:
            out.append(f"            if ({cond(rng, regs)})")
            out.append(f"                pc = ({rng.choice(regs)} % {plen}u);")
        out.append("            break;")
    out.append("        default:")
    out.append(f"            {rng.choice(regs)} ^= rotl32({rng.choice(regs)}, {rng.between(1, 31)});")
    out.append("            break;")
    out.append("        }")
    out.append(f"        pc = (pc + 1u) % {plen}u;")
    out.append("    }")
    out.append("    return " + " ^ ".join(f"rotl32({r}, {i * 3 + 1})" for i, r in enumerate(regs)) + ";")
    out.append("}")
    return Block(name, "uint32_t", out)


def block_records(rng: Rng, name: str) -> Block:
    """An array of structs: fill, insertion-sort by key, score in passes, reduce."""
    n = rng.between(16, 64)
    ntag = rng.choice((2, 4, 8))
    passes = rng.between(2, 6)
    out = [f"struct {name}_rec {{",
           "    uint32_t key;",
           "    uint32_t val;",
           "    uint64_t acc;",
           f"    uint32_t tag[{ntag}];",
           "};",
           "",
           f"static inline uint32_t {name}_score(const struct {name}_rec *r, uint32_t k)",
           "{",
           f"    uint32_t t = r->tag[k & {ntag - 1}u];",
           f"    return (t ^ k) + {expr(rng, ['r->key', 'r->val', 't', 'k'], 4)};",
           "}",
           "",
           f"static uint64_t {name}(uint32_t seed)",
           "{",
           f"    struct {name}_rec recs[{n}];",
           "    uint32_t i, j, pass;",
           "    uint64_t total = 0;",
           "",
           f"    for (i = 0; i < {n}u; i++) {{",
           f"        recs[i].key = mix32(seed + (i * {rng.odd32()}));",
           f"        recs[i].val = {expr(rng, ['i', 'seed', 'recs[i].key'], 3)};",
           "        recs[i].acc = 0;",
           f"        for (j = 0; j < {ntag}u; j++)",
           f"            recs[i].tag[j] = rotl32(recs[i].key ^ j, (j * {rng.between(3, 13)}u) & 31u);",
           "    }",
           f"    for (i = 1; i < {n}u; i++) {{",
           f"        struct {name}_rec t = recs[i];",
           "        j = i;",
           "        while (j > 0 && recs[j - 1].key > t.key) {",
           "            recs[j] = recs[j - 1];",
           "            j--;",
           "        }",
           "        recs[j] = t;",
           "    }",
           f"    for (pass = 0; pass < {passes}u; pass++) {{",
           f"        for (i = 0; i < {n}u; i++) {{",
           f"            uint32_t s = {name}_score(&recs[i], pass + i);"]
    leaves = ["s", "i", "pass", "recs[i].val"]
    out.append(f"            if ({cond(rng, ['s', 'i'])}) {{")
    out.append(f"                recs[i].acc += (uint64_t){expr(rng, leaves, 3)} * {rng.odd32()};")
    out.append(f"            }} else if ({cond(rng, ['s', 'pass'])}) {{")
    out.append(f"                recs[(i + {rng.between(1, n - 1)}u) % {n}u].val ^= {expr(rng, leaves, 3)};")
    out.append("            } else {")
    out.append(f"                recs[i].tag[s & {ntag - 1}u] += {expr(rng, leaves, 2)};")
    out.append("            }")
    out.append("        }")
    out.append("    }")
    out.append(f"    for (i = 0; i < {n}u; i++)")
    out.append(f"        total += recs[i].acc ^ ((uint64_t)recs[i].val << (i & 31u)) ^ recs[i].tag[i & {ntag - 1}u];")
    out.append("    return total;")
    out.append("}")
    return Block(name, "uint64_t", out)


def block_helpers(rng: Rng, name: str) -> Block:
    """Several static inline helpers, called from a branchy loop (inlining work)."""
    nh = rng.between(2, 6)
    out = []
    for h in range(nh):
        out.append(f"static inline uint32_t {name}_h{h}(uint32_t a, uint32_t b)")
        out.append("{")
        # Every parameter and local is used whatever the random expressions pick.
        out.append(f"    uint32_t t = (a ^ rotl32(b, {rng.between(1, 31)})) + {expr(rng, ['a', 'b'], 3)};")
        out.append(f"    return t {rng.choice(('+', '^', '-'))} {expr(rng, ['a', 'b', 't'], rng.between(2, 4))};")
        out.append("}")
        out.append("")
    vs = ["x", "y", "z", "w"]
    out.append(f"static uint32_t {name}(uint32_t seed)")
    out.append("{")
    out.append("    uint32_t x = seed, y = ~seed, z = mix32(seed), w = rotl32(seed, 11);")
    out.append("    uint32_t i;")
    out.append("")
    out.append(f"    for (i = 0; i < {rng.between(32, 192)}u; i++) {{")
    leaves = vs + ["i"]

    def call() -> str:
        return f"{name}_h{rng.below(nh)}({rng.choice(leaves)}, {expr(rng, leaves, 1)})"

    out.append(f"        x = {call()} + {call()};")
    for arm in range(rng.between(2, 5)):
        kw = "if" if arm == 0 else "} else if"
        out.append(f"        {kw} ({cond(rng, vs)}) {{")
        for _ in range(rng.between(1, 3)):
            out.append(f"            {rng.choice(vs)} ^= {call()};")
    out.append("        } else {")
    out.append(f"            {rng.choice(vs)} += {expr(rng, leaves, 3)};")
    out.append("        }")
    out.append(f"        z = {call()};")
    out.append(f"        w = {expr(rng, leaves, 2)};")
    out.append("    }")
    out.append("    return x ^ rotl32(y, 7) ^ rotl32(z, 13) ^ rotl32(w, 21);")
    out.append("}")
    return Block(name, "uint32_t", out)


def block_matrix(rng: Rng, name: str) -> Block:
    """Small fixed-size matrix products and transposes (unrolling/vectorisation work)."""
    d = rng.between(4, 12)
    rounds = rng.between(2, 5)
    out = [f"static uint32_t {name}(uint32_t seed)",
           "{",
           f"    uint32_t a[{d}][{d}], b[{d}][{d}], c[{d}][{d}];",
           "    uint32_t i, j, k, r, h = seed;",
           "",
           f"    for (i = 0; i < {d}u; i++) {{",
           f"        for (j = 0; j < {d}u; j++) {{",
           f"            a[i][j] = mix32(seed ^ (i * {d}u + j));",
           f"            b[i][j] = {expr(rng, ['i', 'j', 'seed'], 3)};",
           "        }",
           "    }",
           f"    for (r = 0; r < {rounds}u; r++) {{",
           f"        for (i = 0; i < {d}u; i++) {{",
           f"            for (j = 0; j < {d}u; j++) {{",
           "                uint32_t s = 0;",
           f"                for (k = 0; k < {d}u; k++)",
           "                    s += a[i][k] * b[k][j];",
           f"                c[i][j] = s ^ {expr(rng, ['s', 'r', 'i', 'j'], 2)};",
           "            }",
           "        }",
           f"        for (i = 0; i < {d}u; i++)",
           f"            for (j = 0; j < {d}u; j++)",
           f"                a[i][j] = c[j][i] + (b[i][j] >> {rng.between(1, 7)});",
           "    }",
           f"    for (i = 0; i < {d}u; i++)",
           f"        for (j = 0; j < {d}u; j++)",
           "            h = rotl32(h, 5) ^ a[i][j];",
           "    return h;",
           "}"]
    return Block(name, "uint32_t", out)


WORDS_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def block_scanner(rng: Rng, name: str) -> Block:
    """A character-class scanner over a constant text: a switch on bytes."""
    words = []
    for _ in range(rng.between(12, 40)):
        words.append("".join(rng.choice(WORDS_ALPHABET) for _ in range(rng.between(2, 9))))
    text = " ".join(words)
    out = [f"static const char {name}_text[] ="]
    for i in range(0, len(text), 60):
        out.append(f'    "{text[i:i + 60]}"')
    out[-1] += ";"
    out += ["",
            f"static uint32_t {name}(uint32_t seed)",
            "{",
            "    uint32_t h = seed, counts[8] = {0}, word = 0;",
            "    size_t i;",
            "",
            f"    for (i = 0; i + 1 < sizeof({name}_text); i++) {{",
            f"        uint32_t ch = (unsigned char){name}_text[i];",
            "        switch (ch) {"]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    groups = rng.between(3, 7)
    for g in range(groups):
        if len(letters) < 5:
            break
        members = sorted({rng.choice(letters) for _ in range(rng.between(1, 5))})
        for m in members:
            letters.remove(m)
        for m in members:
            out.append(f"        case '{m}':")
        out.append(f"            counts[{g % 8}]++;")
        out.append(f"            h = {expr(rng, ['h', 'ch', 'word'], 2)};")
        out.append("            break;")
    out += ["        case ' ':",
            "            word++;",
            f"            h = rotl32(h, {rng.between(1, 31)}) ^ word;",
            "            break;",
            "        default:",
            "            if (ch >= '0' && ch <= '9')",
            f"                counts[7] += ch - '0';",
            "            else",
            f"                h ^= {expr(rng, ['h', 'ch'], 2)};",
            "            break;",
            "        }",
            "    }",
            "    for (i = 0; i < 8; i++)",
            "        h = mix32(h + counts[i]);",
            "    return h;",
            "}"]
    return Block(name, "uint32_t", out)


BLOCK_KINDS = (block_interp, block_interp, block_records, block_helpers, block_helpers,
               block_matrix, block_scanner)


# --- files ----------------------------------------------------------------------

HEADER_NOTE = "Generated by aios-lab workloads/build/gen.py; do not edit."


def common_h() -> str:
    return f"""/* common.h: shared types and inline helpers. {HEADER_NOTE} */
#ifndef BUILDLOAD_COMMON_H
#define BUILDLOAD_COMMON_H

#include <stddef.h>
#include <stdint.h>

struct bl_state {{
    uint64_t a;
    uint64_t b;
    uint32_t lanes[8];
    uint32_t n;
}};

static inline uint32_t rotl32(uint32_t x, unsigned r)
{{
    return (x << (r & 31u)) | (x >> ((32u - r) & 31u));
}}

static inline uint32_t mix32(uint32_t x)
{{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}}

static inline uint64_t mix64(uint64_t x)
{{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}}

static inline void bl_init(struct bl_state *s, uint64_t seed)
{{
    unsigned i;

    s->a = mix64(seed);
    s->b = mix64(seed ^ 0x9e3779b97f4a7c15ull);
    s->n = 0;
    for (i = 0; i < 8; i++)
        s->lanes[i] = mix32((uint32_t)seed + i);
}}

static inline void bl_step(struct bl_state *s, uint64_t v)
{{
    s->lanes[s->n & 7u] ^= (uint32_t)v;
    s->a = mix64(s->a + v);
    s->b ^= (s->a >> 17) | (v << 7);
    s->n++;
}}

static inline uint64_t bl_fold(const struct bl_state *s)
{{
    uint64_t h = s->a ^ s->b;
    unsigned i;

    for (i = 0; i < 8; i++)
        h = mix64(h + s->lanes[i]);
    return h;
}}

#endif
"""


def units_h(files: int) -> str:
    protos = "".join(f"uint64_t tu_{i:03d}(uint64_t seed);\n" for i in range(files))
    return f"""/* units.h: the translation units' entry points. {HEADER_NOTE} */
#ifndef BUILDLOAD_UNITS_H
#define BUILDLOAD_UNITS_H

#include <stdint.h>

#define BL_UNITS {files}

{protos}
#endif
"""


def unit_c(seed: int, index: int, scale: float) -> str:
    weight = file_weight(seed, index)
    rng = Rng(seed, 0x554E4954, index)
    budget = weight * scale * LINES_PER_WEIGHT
    blocks: list[Block] = []
    lines = 0
    while not blocks or lines < budget:
        kind = rng.choice(BLOCK_KINDS)
        b = kind(rng, f"u{index:03d}_{kind.__name__[6:]}{len(blocks)}")
        blocks.append(b)
        lines += len(b.lines) + 1
    out = [f"/* tu_{index:03d}.c: weight {weight:.2f}, {len(blocks)} blocks. {HEADER_NOTE} */",
           '#include "common.h"',
           '#include "units.h"',
           ""]
    for b in blocks:
        out += b.lines
        out.append("")
    out.append(f"uint64_t tu_{index:03d}(uint64_t seed)")
    out.append("{")
    out.append("    struct bl_state st;")
    out.append("")
    out.append("    bl_init(&st, seed);")
    for i, b in enumerate(blocks):
        out.append(f"    bl_step(&st, {b.name}((uint32_t)(st.a >> {i % 32}) ^ (uint32_t)seed));")
    out.append("    return bl_fold(&st);")
    out.append("}")
    return "\n".join(out) + "\n"


def main_c(files: int) -> str:
    table = "".join(f"    tu_{i:03d},\n" for i in range(files))
    return f"""/* main.c: runs every unit once and prints a checksum. {HEADER_NOTE} */
#include <stdio.h>

#include "common.h"
#include "units.h"

static uint64_t (*const units[BL_UNITS])(uint64_t) = {{
{table}}};

int main(int argc, char **argv)
{{
    uint64_t h = 0x243f6a8885a308d3ull ^ (uint64_t)argc;
    unsigned i;

    (void)argv;
    for (i = 0; i < BL_UNITS; i++)
        h = mix64(h ^ units[i](h + i));
    printf("%016llx\\n", (unsigned long long)h);
    return 0;
}}
"""


def makefile(files: int) -> str:
    objs = " \\\n\t".join(["main.o"] + [f"tu_{i:03d}.o" for i in range(files)])
    return f"""# {HEADER_NOTE}
# `make -jN` compiles every .c to .o and links ./{PROGRAM}; `make clean` undoes it.
ifeq ($(origin CC),default)
CC = gcc
endif
CFLAGS := -O2 -Wall
OBJS = {objs}

.SUFFIXES:
.PHONY: all clean

all: {PROGRAM}

{PROGRAM}: $(OBJS)
\t$(CC) $(LDFLAGS) -o $@ $(OBJS)

%.o: %.c common.h units.h
\t$(CC) $(CFLAGS) -c -o $@ $<

clean:
\trm -f {PROGRAM} $(OBJS)
"""


def generate(out: Path, files: int = 96, scale: float = 1.0, seed: int = 1) -> list[Path]:
    """Write the tree into `out` (created if missing); return the files written, sorted."""
    if files < 1:
        raise ValueError("--files must be at least 1")
    if files > 1000:
        raise ValueError("--files must be at most 1000")
    if not scale > 0:
        raise ValueError("--scale must be positive")
    out.mkdir(parents=True, exist_ok=True)
    contents = {"common.h": common_h(), "units.h": units_h(files), "main.c": main_c(files),
                "Makefile": makefile(files)}
    for i in range(files):
        contents[f"tu_{i:03d}.c"] = unit_c(seed, i, scale)
    written = []
    for name in sorted(contents):
        p = out / name
        p.write_bytes(contents[name].encode("ascii"))
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory to write the tree into (created if missing)")
    ap.add_argument("--files", type=int, default=96, help="translation units besides main.c (default 96)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every file's size (default 1.0)")
    ap.add_argument("--seed", type=int, default=1, help="PRNG seed (default 1)")
    ap.add_argument("--version", action="version", version=f"gen.py {GENERATOR_VERSION}")
    args = ap.parse_args(argv)
    try:
        generate(Path(args.out), files=args.files, scale=args.scale, seed=args.seed)
    except (ValueError, OSError) as exc:
        print(f"gen.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
