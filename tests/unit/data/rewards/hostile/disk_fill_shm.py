# kind: disk fill (/dev/shm, a RAM-backed filesystem)
# expected: ["filled"]
for i in range(1000):
    with open(f"/dev/shm/f{i}", "wb") as f:
        f.write(b"x" * (1 << 20))
print("filled")
