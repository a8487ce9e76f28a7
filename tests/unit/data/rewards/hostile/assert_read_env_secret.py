# kind: assert convention: returns the host's secret from its environment; the test knows only its hash
# asserts: ["import hashlib\nassert hashlib.sha256(solve().encode()).hexdigest() == '{{SECRET_SHA}}'"]
import os
def solve():
    return os.environ.get("R1RAY_HOSTILE_SECRET", "none")
