# kind: assert convention: makes a SysV shared memory segment (which would outlive the program in a warm sandbox)
# asserts: ["assert solve() == 'created'"]
import ctypes
def solve():
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(0x5EED, 4096, 0o1666)  # IPC_CREAT | 0666
    return "created" if shmid >= 0 else "refused"
