# kind: fork bomb through new interpreters (subprocess)
# expected: ["spawned 300"]
import subprocess, sys
procs = []
for _ in range(300):
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"]))
    except OSError:
        break
print("spawned", len(procs))
