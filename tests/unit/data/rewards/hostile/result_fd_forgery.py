# kind: writes the right return value straight to the result channel, then exits with an error
# fn_name: solve
# inputs: [[1]]
# expected: [1000]
import os
def solve(x):
    os.write(3, b"1000")  # the right value, but the program then fails
    raise SystemExit(3)
