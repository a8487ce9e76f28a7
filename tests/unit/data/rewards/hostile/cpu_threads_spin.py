# kind: burns CPU on many threads
# expected: ["done"]
import threading
def spin():
    while True:
        pass
for _ in range(16):
    threading.Thread(target=spin, daemon=True).start()
spin()
