# kind: output flood (stdout)
# expected: ["done"]
while True:
    print("A" * 1000)
