#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Resident helpers for bench/agent.sh, inside the test VM. Each runs as one long-lived
process because starting a program over the guest's 9p root costs ~0.2 s (a `dmsetup
table` loop cannot poll every 20 ms); every time stamp is CLOCK_REALTIME, like bash's
$EPOCHREALTIME. Figures only; nothing here asserts anything about speed.

  tablewatch NAME LOG AUDIT log "keyed|unkeyed|absent T" at each change of NAME's table
                            (':logon:' key reference or not), polled every 20 ms, and
                            "DisableKey|EnableKey T" for each such call in the AUDIT log
  writer FILE LOG ACKED     append small fsync'd records to FILE every 10 ms; log
                            "T_PREV T_ACK SEQ" to LOG when an ack comes after a stall
                            (> 150 ms); on SIGTERM write the last acked SEQ to ACKED
  window PID SECONDS AUDIT  sample dmbyokd PID for SECONDS: CPU (its own, its reaped
                            children's and its live children's: the per-key probers),
                            context switches (every 100 ms), memory, the KMS calls in the
                            AUDIT log meanwhile; print KEY=VALUE lines for the shell
  stats                     numbers on stdin -> "n min median p90 max mean"
"""
import ctypes
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time


def log_line(f, text):
    f.write(text + "\n")
    f.flush()


# --- tablewatch: libdevmapper through ctypes, one DM_DEVICE_TABLE ioctl per poll -------
DM_DEVICE_TABLE = 11  # enum in libdevmapper.h: CREATE, RELOAD, REMOVE, REMOVE_ALL,
# SUSPEND, RESUME, INFO, DEPS, RENAME, VERSION, STATUS, TABLE


class DmInfo(ctypes.Structure):
    _fields_ = [("exists", ctypes.c_int), ("suspended", ctypes.c_int),
                ("live_table", ctypes.c_int), ("inactive_table", ctypes.c_int),
                ("open_count", ctypes.c_int32), ("event_nr", ctypes.c_uint32),
                ("major", ctypes.c_uint32), ("minor", ctypes.c_uint32),
                ("read_only", ctypes.c_int), ("target_count", ctypes.c_int32),
                ("deferred_remove", ctypes.c_int), ("internal_suspend", ctypes.c_int),
                ("_spare", ctypes.c_char * 64)]


def libdm():
    for name in ("libdevmapper.so.1.02.1", "libdevmapper.so"):
        try:
            dm = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        sys.exit("agent-helper: cannot load libdevmapper")
    dm.dm_task_create.restype = ctypes.c_void_p
    dm.dm_task_create.argtypes = [ctypes.c_int]
    dm.dm_task_set_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    dm.dm_task_run.argtypes = [ctypes.c_void_p]
    dm.dm_task_get_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(DmInfo)]
    dm.dm_task_destroy.argtypes = [ctypes.c_void_p]
    dm.dm_get_next_target.restype = ctypes.c_void_p
    dm.dm_get_next_target.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.c_uint64),
                                      ctypes.POINTER(ctypes.c_uint64),
                                      ctypes.POINTER(ctypes.c_char_p),
                                      ctypes.POINTER(ctypes.c_char_p)]
    return dm


def table_state(dm, name):
    """'keyed' (a ':logon:' key reference in the table), 'unkeyed' or 'absent'."""
    t = dm.dm_task_create(DM_DEVICE_TABLE)
    try:
        if not dm.dm_task_set_name(t, name) or not dm.dm_task_run(t):
            return "absent"
        info = DmInfo()
        if not dm.dm_task_get_info(t, ctypes.byref(info)) or not info.exists:
            return "absent"
        nxt, keyed = None, False
        start, length = ctypes.c_uint64(), ctypes.c_uint64()
        ttype, params = ctypes.c_char_p(), ctypes.c_char_p()
        while True:
            nxt = dm.dm_get_next_target(t, nxt, ctypes.byref(start), ctypes.byref(length),
                                        ctypes.byref(ttype), ctypes.byref(params))
            if params.value and b":logon:" in params.value:
                keyed = True
            if not nxt:
                break
        return "keyed" if keyed else "unkeyed"
    finally:
        dm.dm_task_destroy(t)


def audit_time(iso):
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def tablewatch(name, path, audit):
    """Also logs "DisableKey|EnableKey T" for each such call the emulator receives (T: its
    audit time, the request's arrival, in ms), so the shell gets the moment the KMS state
    changed without starting a program."""
    dm = libdm()
    name = name.encode()
    a = open(audit)
    a.seek(0, os.SEEK_END)
    pending = ""
    with open(path, "a") as f:
        last = None
        while True:
            s = table_state(dm, name)
            if s != last:
                log_line(f, "%s %.6f" % (s, time.time()))
                last = s
            pending += a.read()
            *lines, pending = pending.split("\n")
            for line in lines:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("operation") in ("DisableKey", "EnableKey"):
                    log_line(f, "%s %.6f" % (e["operation"], audit_time(e["time"])))
            time.sleep(0.02)


# --- writer ---------------------------------------------------------------------------
def writer(path, gaps, acked_path):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    seq, last = 0, None
    with open(gaps, "a") as f:
        log_line(f, "ready %.6f" % time.time())
        while not stop:
            os.write(fd, b"record %08d\n" % seq)
            os.fsync(fd)
            t = time.time()  # acknowledged: fsync returned
            if last is not None and t - last > 0.15:
                log_line(f, "%.6f %.6f %d" % (last, t, seq))
            last = t
            seq += 1
            time.sleep(0.01)
    with open(acked_path, "w") as f:
        f.write("%d\n" % (seq - 1))


# --- window ---------------------------------------------------------------------------
def proc_cpu(pid):
    """(own, children) CPU seconds from /proc/PID/stat: utime+stime, cutime+cstime."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return ((int(rest[11]) + int(rest[12])) / tck, (int(rest[13]) + int(rest[14])) / tck)


def children(pid):
    """The live children of PID (its probers, a running action)."""
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(k) for k in f.read().split()]
    except FileNotFoundError:
        pass
    return kids


def children_cpu(pid):
    """{child: its CPU seconds, its own reaped children included}."""
    r = {}
    for k in children(pid):
        try:
            own, reaped = proc_cpu(k)
        except (FileNotFoundError, ProcessLookupError):
            continue  # just reaped: its CPU is in the parent's cutime now
        r[k] = own + reaped
    return r


def proc_ctx(pid):
    n = 0
    if not os.path.exists("/proc/%d" % pid):
        return 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                        n += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that just ended
    return n


def proc_mem(pid):
    m = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "VmLck"):
                m[k] = int(v.split()[0])
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    m["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return m


def audit_slice(path, start, end):
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    out = []
    for line in data.decode(errors="replace").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if not str(e.get("user_agent") or "").startswith("dmbyok"):
            continue
        out.append((audit_time(e["time"]), e.get("operation"), e.get("key_arn")))
    return out


def perf_start(pid):
    perf = "/usr/bin/perf"
    if not os.access(perf, os.X_OK):
        return None
    out = tempfile.NamedTemporaryFile(prefix="perf.", delete=False)
    out.close()
    # --no-inherit: the agent's own switches, as /proc/PID/task/*/status counts them.
    p = subprocess.Popen([perf, "stat", "--no-inherit", "-x,", "-e",
                          "context-switches,task-clock", "-p", str(pid), "-o", out.name],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, out.name


def perf_stop(h, elapsed):
    if not h:
        return {}
    p, path = h
    p.send_signal(signal.SIGINT)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        return {}
    r = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) >= 3 and parts[2] in ("context-switches", "task-clock"):
                try:
                    r[parts[2]] = float(parts[0])
                except ValueError:
                    pass
    os.unlink(path)
    if "context-switches" not in r:
        return {}
    # perf attached ~1 s before the window and stopped just after it.
    return {"perf_ctx_per_min": "%.1f" % (r["context-switches"] * 60 / elapsed),
            "perf_task_clock_ms": "%.1f" % r.get("task-clock", 0)}


def window(pid, seconds, audit):
    a_pre = os.path.getsize(audit)
    perf = perf_start(pid)
    t_perf = time.time()
    time.sleep(1.5)  # perf's start-up; and probes just before the window get into a_pre..a0
    cpu0, kids0 = proc_cpu(pid), children_cpu(pid)

    def ctx_now():
        return proc_ctx(pid), sum(proc_ctx(k) for k in children(pid))

    a0, t0 = os.path.getsize(audit), time.time()
    samples = [(t0, ctx_now())]
    while True:
        time.sleep(0.1)
        t = time.time()
        samples.append((t, ctx_now()))
        if t - t0 >= seconds:
            break
    cpu1, kids1 = proc_cpu(pid), children_cpu(pid)
    a1, t1 = os.path.getsize(audit), samples[-1][0]
    mem = proc_mem(pid)
    kid_mem = [proc_mem(k) for k in kids1]
    pf = perf_stop(perf, time.time() - t_perf)
    time.sleep(max(0.0, t1 + 1.5 - time.time()))  # a probe just after the window: a1..a_post
    a_post = os.path.getsize(audit)
    calls = audit_slice(audit, a0, a1)
    around = audit_slice(audit, a_pre, a_post)
    span = t1 - t0
    decrypts = [c for c in calls if c[1] == "Decrypt"]
    describes = [c for c in calls if c[1] == "DescribeKey"]
    others = [c for c in calls if c[1] not in ("Decrypt", "DescribeKey")]
    keys = {c[2] for c in calls}
    probes = len(decrypts)  # one Decrypt per probe
    # The probe period: Decrypt to Decrypt of one key (check interval + probe latency).
    gaps = []
    for k in keys:
        ts = sorted(c[0] for c in decrypts if c[2] == k)
        gaps += [b - a for a, b in zip(ts, ts[1:])]
    # Reaped children (cutime) plus the live ones' progress: a child alive at the start and
    # reaped meanwhile has all its CPU in cutime, less what it had at the start.
    own = cpu1[0] - cpu0[0]
    child = cpu1[1] - cpu0[1] + sum(kids1.values()) - sum(kids0.values())
    # Idle: sample intervals at least 1 s from any KMS call of a probe (the timer wake-up,
    # fork and SIGCHLD of a probe all fall within that).
    marks = sorted(c[0] for c in around)
    idle_s = idle_ctx = idle_kids = 0.0
    kids_ctx = 0
    j = 0
    for (ta, ca), (tb, cb) in zip(samples, samples[1:]):
        # A child's counter starts and ends with it: count only its increments.
        dk = max(0, cb[1] - ca[1])
        kids_ctx += dk
        while j < len(marks) and marks[j] < ta - 1.0:
            j += 1
        if j < len(marks) and marks[j] <= tb + 1.0:
            continue
        idle_s += tb - ta
        idle_ctx += cb[0] - ca[0]
        idle_kids += dk
    ctx = samples[-1][1][0] - samples[0][1][0]
    r = {
        "span_s": "%.1f" % span,
        "keys_seen": len(keys),
        "decrypt_per_min": "%.1f" % (len(decrypts) * 60 / span),
        "describe_per_min": "%.1f" % (len(describes) * 60 / span),
        "other_per_min": "%.1f" % (len(others) * 60 / span),
        "calls_per_min": "%.1f" % (len(calls) * 60 / span),
        "probes": probes,
        "period_s": "%.2f" % (sum(gaps) / len(gaps)) if gaps else "-",
        "cpu_own_ms": "%.0f" % (own * 1000),
        "cpu_children_ms": "%.0f" % (child * 1000),
        "cpu_per_probe_ms": "%.1f" % ((own + child) * 1000 / probes) if probes else "-",
        "cpu_own_per_probe_ms": "%.1f" % (own * 1000 / probes) if probes else "-",
        "ctx_per_min": "%.1f" % (ctx * 60 / span),
        "ctx_per_probe": "%.1f" % (ctx / probes) if probes else "-",
        "kids_ctx_per_min": "%.1f" % (kids_ctx * 60 / span),
        "idle_s": "%.1f" % idle_s,
        "idle_ctx": "%d" % idle_ctx,
        "idle_ctx_per_min": "%.2f" % (idle_ctx * 60 / idle_s) if idle_s > 0 else "-",
        "idle_kids_ctx": "%d" % idle_kids,
        "rss_kb": mem.get("VmRSS", 0),
        "hwm_kb": mem.get("VmHWM", 0),
        "anon_kb": mem.get("RssAnon", 0),
        "locked_kb": mem.get("VmLck", 0),
        "pss_kb": mem.get("Pss", 0) + sum(m.get("Pss", 0) for m in kid_mem),
        "kids": len(kid_mem),
        "kids_rss_kb": sum(m.get("VmRSS", 0) for m in kid_mem),
        "kids_anon_kb": sum(m.get("RssAnon", 0) for m in kid_mem),
    }
    r.update(pf)
    for k, v in r.items():
        print("%s=%s" % (k, v))


def stats():
    xs = sorted(float(x) for x in sys.stdin.read().split())
    if not xs:
        print("0 - - - - -")
        return
    n = len(xs)
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    p90 = xs[max(0, -(-9 * n // 10) - 1)]  # nearest rank
    print("%d %.3f %.3f %.3f %.3f %.3f" % (n, xs[0], med, p90, xs[-1], sum(xs) / n))


def main():
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "tablewatch" and len(args) == 3:
        tablewatch(*args)
    elif cmd == "writer" and len(args) == 3:
        writer(*args)
    elif cmd == "window" and len(args) == 3:
        window(int(args[0]), float(args[1]), args[2])
    elif cmd == "stats" and not args:
        stats()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
