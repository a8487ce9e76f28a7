# kind: assert convention: connects to a host loopback service from the function under test
# asserts: ["assert solve() == 'connected'"]
import socket
def solve():
    try:
        socket.create_connection(("127.0.0.1", {{PORT}}), timeout=1).close()
        return "connected"
    except OSError:
        return "blocked"
