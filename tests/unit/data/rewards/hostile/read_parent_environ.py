# kind: reads every process's environment it can find through /proc
# expected: ["{{SECRET}}"]
import os
found = "none"
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            data = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if b"{{SECRET}}" in data:
            found = "{{SECRET}}"
print(found)
