"""A CPU spinner that renames itself (comm) so the stall test policy targets it."""
import ctypes
import sys
import time

PR_SET_NAME = 15
name = sys.argv[1].encode() if len(sys.argv) > 1 else b"aios-stallme"
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
ctypes.CDLL(None).prctl(PR_SET_NAME, name, 0, 0, 0)
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    pass
