# kind: unbounded recursion with the recursion limit lifted (C stack overflow)
# expected: ["ok"]
import sys
sys.setrecursionlimit(10**9)
def f(n):
    return f(n + 1) + 1
print(f(0))
