# kind: memory bomb (one allocation)
# expected: ["allocated"]
x = bytearray(6 << 30)
print("allocated")
