# kind: remounts /usr read-write (directly, and from a fresh user namespace) and writes there
# expected: ["wrote"]
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND = 32, 4096
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
libc.mount(None, b"/usr", None, MS_REMOUNT | MS_BIND, None)
libc.unshare(CLONE_NEWUSER | CLONE_NEWNS)
libc.mount(None, b"/usr", None, MS_REMOUNT | MS_BIND, None)
try:
    with open("/usr/r1ray_hostile_marker", "w") as f:
        f.write("pwned")
    print("wrote")
except OSError as exc:
    print("blocked", exc)
