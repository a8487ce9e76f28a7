# kind: os._exit(0) with the answer still buffered
# expected: ["42"]
import os
print(42)
os._exit(0)
