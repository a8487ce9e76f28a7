# kind: output flood (raw binary on fd 1)
# expected: ["done"]
import os
block = bytes(range(256)) * 4096
while True:
    os.write(1, block)
