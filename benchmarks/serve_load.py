#!/usr/bin/env python3
"""Load test of `adamant serve` (dist/bin/adamant-serve) on loopback, bounded in time.

For each model (mbn_resnet20 from ../shared, a synthesized ResNet-50 from `adamant synth`) and each
concurrency (1, 4, 16 keep-alive connections), runs POST /v1/predict with one raw float32 image per
request for --seconds, with dynamic batching off and on (--batch-window-ms), and reports p50/p99
latency, requests/s, errors and the server's RSS before and after each run (one server per model and
batching setting, warmed up with a second at each concurrency, then the timed runs in order 1, 4,
16 connections: RSS growth across them would be a leak, since each worker's buffer pool is already
at its steady size). Then one run mixes
valid requests with malformed ones (undecodable image, wrong size, unknown domain, bad JSON, bad
attack parameters) and checks that every valid request succeeded and every malformed one got its 4xx.

The client is this script (Python threads, stdlib only), on the same machine as the server: at 16
connections it takes CPU from the server, as any client on a 2-core host would.

    python3 benchmarks/serve_load.py                      # writes benchmarks/results/serve_load.md (+ .json)
    python3 benchmarks/serve_load.py --seconds 3 --models mbn_resnet20
"""
import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(REPO, "..", "shared")
SERVE = os.path.join(REPO, "dist", "bin", "adamant-serve")
CLI = os.path.join(REPO, "dist", "bin", "adamant")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def rss_mib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, model_args, extra, tmp):
        self.port_file = os.path.join(tmp, "port-%d" % time.monotonic_ns())
        self.log = open(self.port_file + ".log", "w")
        self.proc = subprocess.Popen([SERVE, *model_args, "--port", "0", "--port-file", self.port_file,
                                      "--log-level", "warning", *extra], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("adamant-serve did not start; see " + self.log.name)
            time.sleep(0.05)
        self.port = int(open(self.port_file).read())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(60)
        self.log.close()
        return rc


def drive(port, seconds, connections, make_request):
    """`connections` threads, each on its own keep-alive connection, send make_request(i) until the
    deadline. Returns per-request (latency s, ok, expected_ok, status) records and the wall time."""
    records = []
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def worker(w):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        i = w
        while time.monotonic() < deadline:
            path, body, headers, valid = make_request(i)
            i += connections
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                status = r.status
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = status == 200 and data[:1] == b"{"
                if not valid:   # a malformed request must get a JSON 4xx
                    ok = 400 <= status < 500 and b'"error"' in data
            except (OSError, http.client.HTTPException):
                status, ok = -1, False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append((time.perf_counter() - t0, ok, valid, status))
        conn.close()
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, time.monotonic() - start


def summarize(records, wall):
    lat = np.array([r[0] for r in records]) * 1000
    return {
        "requests": len(records),
        "errors": sum(1 for r in records if not r[1]),
        "rps": len(records) / wall,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def raw_request(shape, domain=None, seed=0):
    x = np.random.default_rng(seed).random((1, *shape), dtype=np.float32)
    body = x.astype("<f4").tobytes()
    headers = {"Content-Type": "application/octet-stream", "X-Shape": ",".join(map(str, (1, *shape)))}
    path = "/v1/predict" + ("?domain=" + domain if domain else "")
    return path, body, headers


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each timed run")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--models", default="mbn_resnet20,resnet50")
    ap.add_argument("--batch-window-ms", type=float, default=2.0, help="the dynamic-batching run's window")
    ap.add_argument("--threads", type=int, default=2, help="server worker threads")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "serve_load"))
    args = ap.parse_args()
    for p in (SERVE, CLI):
        if not os.access(p, os.X_OK):
            sys.exit("%s is missing: run `make dist` first" % p)
    load_at_start = open("/proc/loadavg").read().split()[:3]
    tmp = tempfile.mkdtemp(prefix="adamant-serve-load-")
    models = {}
    for name in args.models.split(","):
        if name == "mbn_resnet20":
            d = os.path.join(SHARED, "models", "mbn")
            models[name] = (["--domain", "clean=%s/mbn_resnet20.clean.onnx" % d, "--domain", "adv=%s/mbn_resnet20.adv.onnx" % d],
                            (3, 32, 32), "adv")
        elif name == "resnet50":
            path = os.path.join(tmp, "resnet50.onnx")
            subprocess.run([CLI, "synth", "--depth", "50", "-o", path, "--seed", "0"], check=True, capture_output=True)
            models[name] = ([path], (3, 224, 224), None)
        else:
            sys.exit("unknown model " + name)
    conc = [int(c) for c in args.concurrency.split(",")]
    rows = []
    for name, (margs, shape, domain) in models.items():
        path, body, headers = raw_request(shape, domain)
        for window in (0.0, args.batch_window_ms):
            server = Server(margs, ["--threads", str(args.threads), "--batch-window-ms", str(window), "--max-queue", "256"], tmp)
            try:
                for c in conc:   # warm-up: every concurrency once, so buffer pools reach their steady size
                    drive(server.port, 1.0, c, lambda i: (path, body, headers, True))
                for c in conc:
                    rss0 = rss_mib(server.proc.pid)
                    rec, wall = drive(server.port, args.seconds, c, lambda i: (path, body, headers, True))
                    s = summarize(rec, wall)
                    s.update(model=name, connections=c, batch_window_ms=window, rss_before_mib=rss0,
                             rss_after_mib=rss_mib(server.proc.pid))
                    rows.append(s)
                    print("%-13s conn %2d window %4.1f ms: p50 %7.2f ms  p99 %7.2f ms  %7.1f req/s  errors %d  RSS %.0f -> %.0f MiB"
                          % (name, c, window, s["p50_ms"], s["p99_ms"], s["rps"], s["errors"], rss0, s["rss_after_mib"]),
                          flush=True)
            finally:
                rc = server.stop()
                if rc != 0:
                    sys.exit("adamant-serve exited with %d after SIGTERM" % rc)

    # Valid and malformed requests mixed, on mbn_resnet20 (or the first model).
    name = "mbn_resnet20" if "mbn_resnet20" in models else next(iter(models))
    margs, shape, domain = models[name]
    path, body, headers = raw_request(shape, domain)
    jpeg_like = {"Content-Type": "image/jpeg"}
    malformed = [
        ("/v1/predict", b"\xff\xd8\xff garbage", jpeg_like),
        ("/v1/predict", body[:1000], headers),                                    # wrong size for X-Shape
        ("/v1/predict?domain=nope", body, headers),                               # unknown domain
        ("/v1/predict", b"{\"shape\": [1,3", {"Content-Type": "application/json"}),  # bad JSON
        ("/v1/attack?eps=-1", body, headers),                                     # attack parameters out of bounds
        ("/v1/predict", body, {"Content-Type": "application/octet-stream", "X-Shape": "1,3,7,7"}),
    ]

    def mixed(i):
        if i % 3 == 2:
            p, b, h = malformed[(i // 3) % len(malformed)]
            return p, b, h, False
        return path, body, headers, True

    server = Server(margs, ["--threads", str(args.threads), "--max-queue", "256"], tmp)
    try:
        drive(server.port, 1.0, 4, lambda i: (path, body, headers, True))
        rss0 = rss_mib(server.proc.pid)
        rec, wall = drive(server.port, args.seconds, 16, mixed)
        valid = [r for r in rec if r[2]]
        bad = [r for r in rec if not r[2]]
        s = summarize(valid, wall)
        s.update(model=name + " mixed", connections=16, batch_window_ms=0.0, rss_before_mib=rss0,
                 rss_after_mib=rss_mib(server.proc.pid), malformed=len(bad),
                 malformed_answered_4xx=sum(1 for r in bad if r[1]))
        rows.append(s)
        print("mixed: %d valid (%d failed), %d malformed (%d got their JSON 4xx)"
              % (len(valid), s["errors"], len(bad), s["malformed_answered_4xx"]), flush=True)
    finally:
        rc = server.stop()
    ok = s["errors"] == 0 and s["malformed_answered_4xx"] == len(bad) and rc == 0

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    cpu = "%s, %d logical CPUs" % (cpu_name(), os.cpu_count())
    lines = ["# `adamant serve` load test", "",
             "%s; loopback; %s s per run; server `--threads %d` (compute threads: one per CPU); one raw float32 image per "
             "POST /v1/predict; client: benchmarks/serve_load.py (Python threads, one keep-alive connection each, same machine)."
             % (cpu, args.seconds, args.threads),
             "Host load average (1, 5, 15 min) at the start: %s, at the end: %s (other jobs share this machine)."
             % (" ".join(load_at_start), " ".join(open("/proc/loadavg").read().split()[:3])), "",
             "| model | connections | batch window | requests | req/s | p50 ms | p99 ms | errors | RSS before MiB | RSS after MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append("| %s | %d | %s | %d | %.1f | %.2f | %.2f | %d | %.0f | %.0f |" % (
            r["model"], r["connections"], "off" if r["batch_window_ms"] == 0 else "%g ms" % r["batch_window_ms"],
            r["requests"], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"], r["rss_before_mib"], r["rss_after_mib"]))
    lines += ["", "Mixed run (%s, 16 connections, every third request malformed): %d valid requests, %d failed; "
              "%d malformed, %d answered with their JSON 4xx. %s"
              % (name, s["requests"], s["errors"], s["malformed"], s["malformed_answered_4xx"], "PASS" if ok else "FAIL"), ""]
    open(args.out + ".md", "w").write("\n".join(lines))
    json.dump({"cpu": cpu, "seconds": args.seconds, "rows": rows}, open(args.out + ".json", "w"), indent=1)
    print("\n".join(lines))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
