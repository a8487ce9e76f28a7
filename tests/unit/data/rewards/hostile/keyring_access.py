# kind: reads the kernel keyrings (keys of the same uid on the host)
# expected: ["keys listed"]
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
SYS_keyctl = 250 if os.uname().machine == "x86_64" else 219
KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING = 0, -4
keyring = libc.syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0)
print("keys listed" if keyring > 0 else "blocked")
