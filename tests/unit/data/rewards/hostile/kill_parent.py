# kind: kills its parent (the harness); claims success only if the parent is gone
# expected: ["killed"]
import os, signal, time
parent = os.getppid()
try:
    os.kill(parent, signal.SIGKILL)
except OSError:
    pass
time.sleep(0.2)
try:
    os.kill(parent, 0)
    print("parent alive")
except OSError:
    print("killed")
