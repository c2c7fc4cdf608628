"""A base for objects that own a libbpf handle and must release it exactly once."""
from __future__ import annotations


class Closeable:
    """Context manager + best-effort close at garbage collection.

    Subclasses implement an idempotent close(). Leaking a libbpf handle can
    leave programs attached, so GC closes what the caller forgot.
    """

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - GC timing
        try:
            self.close()
        except Exception:
            pass
