# kind: disk fill (one big file in /tmp)
# expected: ["filled"]
with open("/tmp/fill", "wb") as f:
    for _ in range(1024):
        f.write(b"x" * (1 << 20))
print("filled")
