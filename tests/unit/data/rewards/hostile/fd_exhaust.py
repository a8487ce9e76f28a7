# kind: opens files until it runs out of descriptors
# expected: ["opened 100000"]
import os
fds = []
try:
    for _ in range(100000):
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print("opened", len(fds))
