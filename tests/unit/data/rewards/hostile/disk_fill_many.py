# kind: disk fill (many files, each under any per-file limit)
# expected: ["filled"]
for i in range(2000):
    with open(f"/tmp/f{i}", "wb") as f:
        f.write(b"x" * (1 << 20))
print("filled")
