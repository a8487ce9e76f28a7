# kind: memory bomb (touches every page, 64 MB at a time)
# expected: ["allocated"]
chunks = []
for _ in range(64):
    chunks.append(bytes(64 << 20))
print("allocated")
