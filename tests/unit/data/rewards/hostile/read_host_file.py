# kind: reads a host file it was told about
# expected: ["{{SECRET}}"]
try:
    print(open("{{SECRET_PATH}}").read().strip())
except OSError as exc:
    print("blocked", exc)
