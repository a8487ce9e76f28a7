# kind: sets up io_uring (a frequent source of kernel exploits)
# expected: ["ring ready"]
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = (ctypes.c_char * 120)()
fd = libc.syscall(425, 8, params)
print("ring ready" if fd >= 0 else "blocked")
