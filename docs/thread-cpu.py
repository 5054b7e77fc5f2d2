#!/usr/bin/env python3
"""Sample per-thread CPU (utime+stime ticks) of given pids every second until they all exit."""
import os, sys, time
pids = sys.argv[2:]; out = open(sys.argv[1], "w")
while True:
    alive = False
    t = time.time()
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        alive = True
        for tid in tasks:
            try:
                s = open(f"/proc/{pid}/task/{tid}/stat").read()
            except FileNotFoundError:
                continue
            comm = s[s.index("(")+1:s.rindex(")")]
            f = s[s.rindex(")")+2:].split()
            out.write(f"{t:.2f} {pid} {tid} {comm.replace(' ','_')} {f[11]} {f[12]}\n")
    out.flush()
    if not alive: break
    time.sleep(1)
