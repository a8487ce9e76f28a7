# kind: daemonised child (double fork, setsid, ignores SIGTERM) must not outlive its test
# inputs: ["start", "check"]
# expected: ["started", "alive"]
import os, signal, sys, time
if input() == "start":
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with open("/tmp/daemon.pid", "w") as f:
                f.write(str(os.getpid()))
            for fd in range(3):
                os.close(fd)
            while True:
                time.sleep(0.05)
        os._exit(0)
    time.sleep(0.3)
    print("started")
else:
    try:
        os.kill(int(open("/tmp/daemon.pid").read()), 0)
        print("alive")
    except (OSError, ValueError):
        print("dead")
