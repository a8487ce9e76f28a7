# kind: creates fresh user/mount/network namespaces (capabilities inside them are a classic escape route)
# expected: ["namespaces created"]
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
ok = libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) == 0
SYS_clone = 56 if os.uname().machine == "x86_64" else 220
pid = libc.syscall(SYS_clone, CLONE_NEWUSER | 17, None, None, None, None)  # 17 = SIGCHLD
if pid == 0:
    os._exit(0)
ok = ok or pid > 0
print("namespaces created" if ok else "blocked")
