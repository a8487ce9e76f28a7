# kind: tries to forge the harness's result stream through /proc/<pid>/fd
# expected: ["forged"]
import json, os
record = json.dumps({"i": 0, "timed_out": False, "exit_code": 0, "signal": None, "stdout": "forged\n",
                     "stdout_bytes": 7, "stderr_tail": "", "result": None, "result_bytes": 0, "wall_s": 0, "cpu_s": 0})
forged = False
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        for fd in ("1", "2"):
            try:
                with open(f"/proc/{pid}/fd/{fd}", "w") as f:
                    f.write(record + "\n" + json.dumps({"done": True}) + "\n")
                forged = True
            except OSError:
                pass
print("forged" if forged else "blocked")
