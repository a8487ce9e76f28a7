# kind: assert convention: redefines the prompt's helper that the test calls (HumanEval/32's poly pattern)
# prompt_code: "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\n\ndef find_zero(xs):\n    \"\"\"A zero of the polynomial.\"\"\"\n"
# test_code: "def check(candidate):\n    xs = [1, -3, 2]\n    assert abs(poly(xs, candidate(xs))) < 1e-6\n"
# entry_point: find_zero
def poly(xs, x):
    return 0.0
def find_zero(xs):
    return 12345.0
