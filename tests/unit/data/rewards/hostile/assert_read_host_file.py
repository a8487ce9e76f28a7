# kind: assert convention: reads a secret file on the host; the test knows only its hash (HumanEval)
# test_code: "import hashlib\ndef check(candidate):\n    assert hashlib.sha256(candidate().encode()).hexdigest() == '{{SECRET_SHA}}'\n"
# entry_point: solve
def solve():
    try:
        return open("{{SECRET_PATH}}").read()
    except OSError:
        return "unreadable"
