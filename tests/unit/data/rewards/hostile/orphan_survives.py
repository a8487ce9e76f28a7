# kind: orphaned child (parent exits first) must not outlive its test
# inputs: ["start", "check"]
# expected: ["started", "alive"]
import os, time
if input() == "start":
    pid = os.fork()
    if pid == 0:
        time.sleep(1000)
        os._exit(0)
    open("/tmp/orphan.pid", "w").write(str(pid))
    print("started")
    os._exit(0)
try:
    os.kill(int(open("/tmp/orphan.pid").read()), 0)
    print("alive")
except (OSError, ValueError):
    print("dead")
