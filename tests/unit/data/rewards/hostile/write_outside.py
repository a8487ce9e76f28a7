# kind: writes outside the sandbox (a host path, the interpreter, the root)
# expected: ["wrote"]
import os, sys
wrote = False
for path in ("{{MARKER_PATH}}", os.path.join(sys.prefix, "r1ray_hostile_marker"), "/r1ray_hostile_marker",
             "/usr/r1ray_hostile_marker"):
    try:
        with open(path, "w") as f:
            f.write("pwned")
        wrote = wrote or path == "{{MARKER_PATH}}"
    except OSError:
        pass
print("wrote" if wrote else "blocked")
