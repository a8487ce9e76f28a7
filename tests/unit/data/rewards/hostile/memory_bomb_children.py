# kind: memory bomb spread over processes (each within its own limit, together far above the sandbox's)
# expected: ["all children allocated"]
import os, time
pids = []
for _ in range(12):
    pid = os.fork()
    if pid == 0:
        try:
            data = bytearray(180 << 20)
            for i in range(0, len(data), 4096):
                data[i] = 1
            time.sleep(0.5)  # hold it while the others allocate
            os._exit(0)
        except BaseException:
            os._exit(1)
    pids.append(pid)
ok = all(os.waitpid(p, 0)[1] == 0 for p in pids)
print("all children allocated" if ok else "failed")
