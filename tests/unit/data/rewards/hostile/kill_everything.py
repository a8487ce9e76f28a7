# kind: kills every process it may signal; claims success only if its parent is gone
# expected: ["killed all"]
import os, signal, time
parent = os.getppid()
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
time.sleep(0.2)
try:
    os.kill(parent, 0)
    print("parent alive")
except OSError:
    print("killed all")
