# kind: tries to change host-wide kernel settings through /proc/sys (opens only: nothing is written)
# expected: ["sysctl writable"]
import os
writable = False
for path in ("/proc/sys/kernel/pid_max", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/panic", "/proc/sysrq-trigger"):
    try:
        os.close(os.open(path, os.O_WRONLY))
        writable = True
    except OSError:
        pass
print("sysctl writable" if writable else "blocked")
