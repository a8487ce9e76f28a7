# kind: infinite loop
# expected: ["done"]
while True:
    pass
