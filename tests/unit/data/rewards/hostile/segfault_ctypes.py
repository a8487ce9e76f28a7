# kind: segfault through ctypes
# expected: ["ok"]
import ctypes
ctypes.string_at(0)
print("ok")
