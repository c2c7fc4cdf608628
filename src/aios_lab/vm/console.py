"""Reading the guest kernel's console: panics, oopses, hangs, sched_ext exits.

A guest run passes only if its command exited 0 *and* the kernel did not
oops or panic on the way: emulated multi-threaded TCG, for one, oopses the
guest during sched_ext disable while the command may still "succeed".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

PANIC_RE = re.compile(r"Kernel panic - not syncing.*")
OOPS_RE = re.compile(r"(Oops: .*|BUG: .*|kernel BUG at .*|general protection fault.*|Unable to handle kernel .*)")
HANG_RE = re.compile(r"(INFO: task .* blocked for more than .*|rcu: INFO: .*detected stalls.*|"
                     r"watchdog: BUG: soft lockup.*|NMI watchdog: .*hard LOCKUP.*)")
WARN_RE = re.compile(r"WARNING: CPU: \d+ PID: \d+ at .*")
SCX_RE = re.compile(r"sched_ext: .*")
# Strip the "[   12.345678] " timestamp prefix.
_TS_RE = re.compile(r"^\[\s*\d+\.\d+\]\s*")


@dataclass
class ConsoleReport:
    panic: str | None = None
    oopses: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sched_ext: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.panic or self.oopses)

    def feed(self, line: str) -> None:
        msg = _TS_RE.sub("", line.rstrip())
        if m := PANIC_RE.search(msg):
            self.panic = self.panic or m.group(0)
        # soft lockups also say "BUG:"; file them as hangs, not oopses
        if m := HANG_RE.search(msg):
            self.hangs.append(m.group(0))
        elif m := OOPS_RE.search(msg):
            self.oopses.append(m.group(0))
        if m := WARN_RE.search(msg):
            self.warnings.append(m.group(0))
        if m := SCX_RE.search(msg):
            self.sched_ext.append(m.group(0))

    def summary(self) -> str:
        if self.panic:
            return f"guest kernel panic: {self.panic}" + (f" (after: {self.oopses[0]})" if self.oopses else "")
        if self.oopses:
            return f"guest kernel oops: {self.oopses[0]}"
        if self.hangs:
            return f"guest kernel hang report: {self.hangs[0]}"
        return "guest kernel console clean"


def scan(text: str) -> ConsoleReport:
    rep = ConsoleReport()
    for line in text.splitlines():
        rep.feed(line)
    return rep
