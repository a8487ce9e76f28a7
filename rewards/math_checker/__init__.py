"""The math checker behind the `math` reward (rewards/math.py): find the final answer in a completion
(extract), parse it and the gold answer into a small expression tree (parse), decide equivalence exactly where
it can (compare) and with sympy in a memory- and time-bounded child process where it cannot (sympy_judge)."""

MAX_ANSWER_CHARS = 2_000
"""The longest final answer the checker reads (extracted or gold); longer is hostile or not an answer."""
