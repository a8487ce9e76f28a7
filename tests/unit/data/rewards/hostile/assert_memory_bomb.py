# kind: assert convention: the function under test makes one huge allocation (HumanEval)
# test_code: "def check(candidate):\n    assert candidate() == 'survived'\n"
# entry_point: solve
def solve():
    x = bytearray(6 << 30)
    return "survived"
