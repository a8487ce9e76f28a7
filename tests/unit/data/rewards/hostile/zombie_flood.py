# kind: leaves exited children unreaped until the process table fills
# expected: ["3000 zombies"]
import os
n = 0
for _ in range(3000):
    try:
        if os.fork() == 0:
            os._exit(0)
        n += 1
    except OSError:
        break
print(n, "zombies")
