"""The policy control plane: what stands between whoever proposes a scheduler
and the kernel; first its storage: what was proposed, by whom, and what
happened to it.

* `store`: immutable blobs named by their sha256, written atomically.
* `db`: the SQLite index (WAL, one schema), opened the same way by everyone.
* `entry`: what a registry entry is and how its key is computed.
* `registry`: submit policy folders, resolve references, walk history,
  record verification and benchmark runs with their raw samples.
* `audit`: the append-only, hash-chained log of who asked for what.
* `diff`: what changed between two entries (manifest, tunables, model, object);
  `elf`: a BPF object's sections; `platform`: the kernel, BTF and topology a
  run was on.
* `service`, `peer`, `deployers`: the root service of the privilege split
  (SO_PEERCRED, rate limit, registered deployers).

Everything here is library: typed exceptions, no printing (cli/control.py is
the command line).
"""
