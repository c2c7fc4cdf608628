"""Reading the guest kernel's console: panics, oopses, hangs, sched_ext exits.

A guest run passes only if its command exited 0 *and* the kernel did not
oops or panic on the way: emulated multi-threaded TCG, for one, oopses the
guest during sched_ext disable while the command may still "succeed".

One oops is told apart: an ``int3`` trap at an address whose byte in memory
is no longer 0xcc. The kernel patches jump labels and static calls by
writing int3 over the first byte, then the new bytes, then the new first
byte, and synchronises every CPU in between, so on hardware no CPU can trap
on an int3 once the patch is done. The "Code:" line the oops prints is read
from memory at that moment; when the byte before the trapping ip is not cc,
the CPU executed a translation of the code older than memory: a stale
translated block of the emulator (QEMU 10 multi-threaded TCG did it once in
a CI guest suite, in sched_balance_update_blocked_averages 5 s after a
sched_ext enable), not something the guest kernel or a policy did.
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
INT3_RE = re.compile(r"Oops: int3\b")
RIP_RE = re.compile(r"^RIP: [0-9a-f]{4}:(\S+)")
CODE_RE = re.compile(r"^Code: (.*)")


def _byte_before_ip(code: str) -> str | None:
    """The byte just before the ``<xx>``-marked ip of an oops "Code:" line."""
    toks = code.split()
    for i, tok in enumerate(toks):
        if tok.startswith("<"):
            return toks[i - 1].lower() if i > 0 else None
    return None


@dataclass
class ConsoleReport:
    panic: str | None = None
    oopses: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sched_ext: list[str] = field(default_factory=list)
    # One entry per int3 oops whose trapping byte memory no longer holds.
    stale_code: list[str] = field(default_factory=list)
    _int3: bool = field(default=False, repr=False)  # an int3 oops awaits its Code: line
    _rip: str = field(default="?", repr=False)

    @property
    def failed(self) -> bool:
        return bool(self.panic or self.oopses)

    @property
    def emulator_fault(self) -> bool:
        """Every oops of this boot was an int3 on code memory no longer holds."""
        return bool(self.oopses) and len(self.stale_code) == len(self.oopses)

    def feed(self, line: str) -> None:
        msg = _TS_RE.sub("", line.rstrip())
        if m := PANIC_RE.search(msg):
            self.panic = self.panic or m.group(0)
        # soft lockups also say "BUG:"; file them as hangs, not oopses
        if m := HANG_RE.search(msg):
            self.hangs.append(m.group(0))
        elif m := OOPS_RE.search(msg):
            self.oopses.append(m.group(0))
            self._int3 = bool(INT3_RE.search(msg))
            self._rip = "?"
        if self._int3:
            if m := RIP_RE.search(msg):
                self._rip = m.group(1)
            elif m := CODE_RE.search(msg):
                self._int3 = False
                byte = _byte_before_ip(m.group(1))
                if byte is not None and byte != "cc":
                    self.stale_code.append(f"int3 at {self._rip} where memory holds {byte}, not cc")
        if m := WARN_RE.search(msg):
            self.warnings.append(m.group(0))
        if m := SCX_RE.search(msg):
            self.sched_ext.append(m.group(0))

    def summary(self) -> str:
        if self.emulator_fault:
            return (f"emulator fault: the guest trapped on an {self.stale_code[0]} (a stale translation "
                    "of patched kernel code; not a kernel or policy bug)")
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
