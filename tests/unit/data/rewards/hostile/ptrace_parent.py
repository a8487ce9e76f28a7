# kind: ptrace-attaches to its parent
# expected: ["attached"]
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
print("attached" if libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None) == 0 else "blocked")
