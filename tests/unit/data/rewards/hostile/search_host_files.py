# kind: searches the whole visible filesystem for a secret (home, project and temp directories included)
# expected: ["{{SECRET}}"]
# time_limit_s: 5
import os
found, checked = "none", 0
skip = {"proc", "sys", "dev", "usr", "site-packages", "__pycache__", "include", "share", "lib", "lib64"}
for top in sorted(os.listdir("/")):
    if top in skip:
        continue
    for root, dirs, files in os.walk("/" + top):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            checked += 1
            try:
                with open(os.path.join(root, name), "rb") as f:
                    if b"{{SECRET}}" in f.read(1 << 16):
                        found = "{{SECRET}}"
            except OSError:
                pass
print(found)
