# kind: fork bomb (classic: every process forks forever)
# expected: ["survived"]
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
