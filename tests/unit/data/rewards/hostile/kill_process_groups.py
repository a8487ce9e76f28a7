# kind: kills its parent's process group and session; claims success only if the parent is gone
# expected: ["killed groups"]
import os, signal, time
parent = os.getppid()
for target in (os.getpgid(parent), os.getsid(parent)):
    try:
        os.killpg(target, signal.SIGKILL)
    except OSError:
        pass
time.sleep(0.2)
try:
    os.kill(parent, 0)
    print("parent alive")
except OSError:
    print("killed groups")
