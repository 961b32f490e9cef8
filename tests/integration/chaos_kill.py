#!/usr/bin/env python3
"""chaos_kill.py DB PIDFILE TARGET ORDER DELAY_MS TIMEOUT_S: SIGKILLs a server at a chosen moment.

TARGET is a phase the server writes to the run store (runs.phase: waiting, training,
advertise_keys, ..., aggregating, evaluating) or "startup" (DELAY_MS after this helper starts,
while the server is still loading). The helper polls the store every millisecond or two through
one read-only connection (WAL readers never block the server), waits until the server has
written TARGET (after this helper started: a phase left by a killed server does not count),
sleeps DELAY_MS and kills. Start it before the server, once it has made PIDFILE.ready: it
then waits for PIDFILE to hold the server's pid.
ORDER lists the phases of a round, comma-separated, in the order the server goes through them:
a phase too short to be seen between two polls is overshot, and the helper then kills at
once (seeing a later phase of that round, or a later round), so overshooting costs at most one
round. Past TIMEOUT_S it kills anyway. What it hit is what is reported. Prints one line:
    PHASE ROUND COMMITTED_BEFORE COMMITTED_AFTER
PHASE/ROUND: the last phase the server wrote before it died; COMMITTED_BEFORE: rounds in the
store just before the signal; COMMITTED_AFTER: just after the process was gone.
Exit status 3 (and "finished") when the server exited by itself first.
"""
import os
import signal
import sqlite3
import sys
import time


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main():
    db, pidfile, target, order = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    delay, timeout = int(sys.argv[5]) / 1000.0, float(sys.argv[6])
    t0 = time.time()
    con = None
    pid = None
    open(pidfile + ".ready", "w").close()  # the caller starts the server only now
    while pid is None:
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            time.sleep(0.001)

    def query(sql):
        nonlocal con
        try:
            if con is None:
                if not os.path.exists(db + "-wal"):
                    return None  # a store the server is still creating: a reader there can block it
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
            return con.execute(sql).fetchone()
        except sqlite3.Error:
            con = None
            return None

    def committed():
        # A server starting on a killed server's store recovers its WAL under a lock: retry
        # until a reader gets through (a missing answer must not read as 0 rounds).
        for _ in range(2000):
            r = query("select count(*) from rounds where run_id = 1")
            if r:
                return r[0]
            time.sleep(0.005)
        raise SystemExit("cannot read the store " + db)

    if target == "startup":
        time.sleep(delay)
    else:
        rank = {p: i for i, p in enumerate(order)}
        goal, overshot = None, False  # (round, rank) where TARGET is due
        while time.time() - t0 < timeout:
            if not alive(pid):
                print("finished")
                return 3
            r = query("select phase, phase_at, phase_round from runs where id = 1")
            if r and r[1] is not None and r[1] > t0:
                if r[0] == target:
                    break
                if r[0] in rank and target in rank:
                    pos = (r[2], rank[r[0]])
                    if goal is None:
                        goal = (r[2] + (pos[1] > rank[target]), rank[target])
                    if pos > goal:
                        overshot = True
                        break
            time.sleep(0.0015)
        if not overshot:
            time.sleep(delay)
    if not alive(pid):
        print("finished")
        return 3
    before = committed()
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.001)
    if con is not None:  # a fresh snapshot, not the read transaction of the last poll
        con.close()
        con = None
    r = query("select coalesce(phase, '-'), coalesce(phase_round, 0), phase_at from runs where id = 1")
    phase, rnd = ("startup", 0)  # it wrote no phase yet: killed while loading
    if r and (r[2] or 0) > t0:  # a phase written by the process just killed
        phase, rnd = r[0], r[1]
    print(phase, rnd, before, committed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
