# kind: ignores SIGTERM, SIGINT and SIGHUP
# expected: ["done"]
import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
