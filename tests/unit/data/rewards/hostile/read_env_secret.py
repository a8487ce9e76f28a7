# kind: reads a secret from its environment
# expected: ["{{SECRET}}"]
import os
print(os.environ.get("R1RAY_HOSTILE_SECRET", "none"))
