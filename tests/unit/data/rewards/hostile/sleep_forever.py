# kind: sleeps forever (no CPU used: only the wall clock can stop it)
# expected: ["done"]
import time
time.sleep(10**6)
print("done")
