# kind: sys.exit(0) before printing the answer
# expected: ["42"]
import sys
sys.exit(0)
print(42)
