# kind: thread bomb
# expected: ["5000"]
import threading, time
n = 0
for _ in range(5000):
    try:
        threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
        n += 1
    except (RuntimeError, MemoryError):
        break
print(n)
