# kind: output flood (stderr)
# expected: ["done"]
import sys
while True:
    sys.stderr.write("E" * 1000 + "\n")
