"""Runs as root inside fresh network, PID and mount namespaces (PID 1 of its namespace).

Copies the run's files into a private tmpfs, hides /tmp, /var/tmp, /dev/shm, /root and /home
behind empty tmpfs mounts, drops to the unprivileged user, then runs the harness. It must stay
alive until the harness ends: when it exits, the kernel kills everything left in the namespace.
Arguments: WORK_DIR UID PYTHON (an interpreter the unprivileged user can run).
"""

import os
import subprocess
import sys

work_dir, uid, python = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = {}
for name in ("solution.py", "tests.py", "harness.py"):
    with open(os.path.join(work_dir, name), "rb") as source:
        files[name] = source.read()
for target in ("/tmp", "/var/tmp", "/dev/shm", "/root", "/home"):
    if os.path.isdir(target):
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m,mode=1777", "tmpfs", target], check=True
        )
run_dir = "/tmp/run"
os.mkdir(run_dir)
for name, data in files.items():
    with open(os.path.join(run_dir, name), "wb") as target_file:
        target_file.write(data)
os.chown(run_dir, uid, uid)
os.chdir(run_dir)
child = os.fork()
if child == 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    os.execv(python, [python, "-I", "-S", os.path.join(run_dir, "harness.py")])
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
