# kind: network: name resolution through the system resolver
# expected: ["resolved"]
import socket
try:
    socket.getaddrinfo("localhost", 80)
    print("resolved")
except OSError as exc:
    print("blocked", exc)
