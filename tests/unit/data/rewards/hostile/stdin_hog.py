# kind: reads from its stdin forever and writes to its own input
# expected: ["done"]
import os, sys
while True:
    data = sys.stdin.read()
    try:
        os.write(0, b"more\n")
    except OSError:
        pass
