# kind: fork bomb (counts how many sleeping children it can hold)
# expected: ["2000"]
import os, time
n = 0
for _ in range(2000):
    try:
        if os.fork() == 0:
            time.sleep(1000)
            os._exit(0)
        n += 1
    except OSError:
        break
print(n)
