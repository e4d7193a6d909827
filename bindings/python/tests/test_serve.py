"""`adamant serve` (dist/bin/adamant-serve): every endpoint and every error status, results checked
against the Python binding and the CLI, dynamic batching bit for bit, overload (503), cancellation
of an attack whose client has gone, Prometheus counts, and a graceful SIGTERM exit.

Each server runs on a free loopback port (--port 0 --port-file) with the Mixture-BN ResNet-8
shipped in examples/ (clean and adv domains). ADAMANT_SERVE=path picks another build.
"""
import base64
import http.client
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import CLI, REPO, example_or_shared_mbn8

SERVE = os.environ.get("ADAMANT_SERVE") or os.path.join(REPO, "dist", "bin", "adamant-serve")
DOMAINS = ["--domain", "clean=" + example_or_shared_mbn8("clean"), "--domain", "adv=" + example_or_shared_mbn8("adv")]


class Server:
    """A running adamant-serve: start(), request(), stop() (SIGTERM, returns the exit status)."""

    def __init__(self, tmp_path, *args):
        self.port_file = str(tmp_path / ("port-%d" % id(self)))
        self.log = open(str(tmp_path / ("serve-%d.log" % id(self))), "w+")
        self.proc = subprocess.Popen([SERVE, *DOMAINS, "--host", "127.0.0.1", "--port", "0",
                                      "--port-file", self.port_file, "--log-level", os.environ.get("SERVE_LOG", "notice"), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.port_file):
            assert self.proc.poll() is None, "adamant-serve exited early: " + self.logs()
            assert time.monotonic() < deadline, "adamant-serve did not start: " + self.logs()
            time.sleep(0.02)
        self.port = int(open(self.port_file).read())

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def json(self, method, path, body=None, headers=None):
        status, h, data = self.request(method, path, body, headers)
        assert h.get("content-type", "").startswith("application/json"), (status, h, data[:200])
        return status, h, json.loads(data)

    def metrics(self):
        status, _, data = self.request("GET", "/metrics")
        assert status == 200
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self):
        """SIGTERM, then the exit status (a server still running 60 s later is killed: a failure)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("adamant-serve did not exit within 60 s of SIGTERM: " + self.logs())
        finally:
            if not self.log.closed:
                self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"), "--threads", "2")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def model(adamant_module):
    return adamant_module.load({"clean": example_or_shared_mbn8("clean"), "adv": example_or_shared_mbn8("adv")})


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Eight CIFAR-10 JPEG files from examples/data (paths), one per class where possible."""
    d = tmp_path_factory.mktemp("jpegs")
    out = []
    with tarfile.open(os.path.join(REPO, "examples", "data", "cifar10-demo.tar.gz")) as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name)
        seen = set()
        for m in members:
            cls = m.name.split("/")[-2]
            if cls in seen:
                continue
            seen.add(cls)
            p = d / ("%02d_%s.jpg" % (len(out), cls))
            p.write_bytes(tf.extractfile(m).read())
            out.append(str(p))
            if len(out) == 8:
                break
    return out


def pixels_of(paths):
    """Float32 NCHW pixels of image files, decoded with Pillow (k/255 exactly)."""
    return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1) / np.float32(255)
                     for p in paths]).astype(np.float32)


def png_bytes(chw):
    """A PNG of float CHW pixels that are multiples of 1/255 (lossless)."""
    b = io.BytesIO()
    Image.fromarray(np.round(chw.transpose(1, 2, 0) * 255).astype(np.uint8)).save(b, format="PNG")
    return b.getvalue()


def multipart(files):
    boundary = "adamant-test-boundary-7d1f"
    body = b""
    for i, (name, data, ctype) in enumerate(files):
        body += (b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\"f%d\"; filename=\"%s\"\r\n"
                 b"Content-Type: %s\r\n\r\n" % (i, name.encode(), ctype.encode())) + data + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary}


def raw(x):
    return np.ascontiguousarray(x, "<f4").tobytes(), {"Content-Type": "application/octet-stream",
                                                      "X-Shape": ",".join(map(str, x.shape))}


def logits_of(resp):
    return np.array([p["logits"] for p in resp["predictions"]], np.float32)


# ---------------------------------------------------------------------------------------------
# GET endpoints

def test_model_info_and_health(server, model):
    status, _, info = server.json("GET", "/v1/model")
    assert status == 200
    assert info["domains"] == model.domains == ["clean", "adv"]
    assert info["default_domain"] == "clean"
    assert info["input"]["shape"] == [3, 32, 32] and info["classes"] == 10
    assert "isa=" in info["backend"] and info["server"]["workers"] == 2
    status, _, h = server.json("GET", "/healthz")
    assert status == 200 and h["status"] == "ok"


# ---------------------------------------------------------------------------------------------
# /v1/predict: every input format gives the binding's logits bit for bit

def test_predict_raw_float32_equals_binding(server, model):
    x = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    for domain in ["clean", "adv"]:
        body, h = raw(x)
        status, hdr, r = server.json("POST", "/v1/predict?domain=%s&top_k=3" % domain, body, h)
        assert status == 200, r
        assert r["domain"] == domain and r["batch"] == 5 and r["classes"] == 10
        ref = model.predict(x, domain=domain)
        assert np.array_equal(logits_of(r), ref)
        for i, p in enumerate(r["predictions"]):
            order = np.argsort(-ref[i], kind="stable")[:3]
            assert [t["class"] for t in p["top_k"]] == list(order) and p["class"] == order[0]
        assert hdr["x-adamant-batch"] == "5"
    # The domain by index, and the default domain when none is named.
    _, _, r1 = server.json("POST", "/v1/predict?domain=1", *raw(x))
    assert r1["domain"] == "adv" and np.array_equal(logits_of(r1), model.predict(x, domain="adv"))
    _, _, r0 = server.json("POST", "/v1/predict", *raw(x))
    assert r0["domain"] == "clean" and len(r0["predictions"][0]["top_k"]) == 5


def test_predict_png_multipart_json_equal_binding(server, model, jpegs):
    x = pixels_of(jpegs[:3])
    ref = model.predict(x, domain="adv")
    pngs = [png_bytes(xi) for xi in x]
    status, _, r = server.json("POST", "/v1/predict?domain=adv", pngs[0], {"Content-Type": "image/png"})
    assert status == 200 and np.array_equal(logits_of(r), ref[:1])
    body, h = multipart([("a.png", p, "image/png") for p in pngs])
    status, _, r = server.json("POST", "/v1/predict?domain=adv", body, h)
    assert status == 200 and r["batch"] == 3 and np.array_equal(logits_of(r), ref)
    doc = {"shape": list(x.shape), "data": [float(v) for v in x.ravel()], "domain": "adv"}
    status, _, r = server.json("POST", "/v1/predict", json.dumps(doc), {"Content-Type": "application/json"})
    assert status == 200 and r["domain"] == "adv" and np.array_equal(logits_of(r), ref)
    doc = {"images": [base64.b64encode(p).decode() for p in pngs]}
    status, _, r = server.json("POST", "/v1/predict?domain=adv", json.dumps(doc), {"Content-Type": "application/json"})
    assert status == 200 and np.array_equal(logits_of(r), ref)


def test_predict_jpeg_equals_cli(server, jpegs, tmp_path):
    """JPEG bodies are decoded as the CLI decodes files: same top-5 logits as `adamant predict`."""
    out = tmp_path / "p.json"
    subprocess.run([CLI, "predict", *DOMAINS, *jpegs[:4], "--domains", "adv", "--json", str(out)], check=True,
                   capture_output=True)
    cli = json.loads(out.read_text())
    body, h = multipart([(os.path.basename(p), open(p, "rb").read(), "image/jpeg") for p in jpegs[:4]])
    status, _, r = server.json("POST", "/v1/predict?domain=adv", body, h)
    assert status == 200
    for i, p in enumerate(r["predictions"]):
        assert [t["class"] for t in p["top_k"]] == [t["class"] for t in cli[i]["top"]]
        assert [np.float32(t["logit"]) for t in p["top_k"]] == [np.float32(t["logit"]) for t in cli[i]["top"]]
    status, _, r1 = server.json("POST", "/v1/predict?domain=adv", open(jpegs[0], "rb").read(), {"Content-Type": "image/jpeg"})
    assert status == 200 and r1["predictions"][0]["logits"] == r["predictions"][0]["logits"]


# ---------------------------------------------------------------------------------------------
# /v1/attack: PGD equals the binding's and the CLI's with the same seed

def attack_float32(server, x, query):
    body, h = raw(x)
    status, _, r = server.json("POST", "/v1/attack?format=float32&" + query, body, h)
    assert status == 200, r
    adv = np.frombuffer(base64.b64decode(r["adversarial"]["data"]), "<f4").reshape(r["adversarial"]["shape"])
    return r, adv


def test_attack_equals_binding(server, model, jpegs):
    x = pixels_of(jpegs)
    # Untargeted, labels = the model's prediction through the evaluation domain (the default).
    r, adv = attack_float32(server, x, "eps=8/255&steps=5&seed=3&eval_domain=adv")
    y = model.predict(x, domain="adv").argmax(1)
    ref, det = model.pgd(x, y, eps=8 / 255, alpha=2 / 255, steps=5, seed=3, attack_domain="adv", eval_domain="adv",
                         return_details=True)
    assert np.array_equal(adv, ref)
    assert [s["label"] for s in r["samples"]] == list(y)
    assert [s["success"] for s in r["samples"]] == list(det["success"])
    assert [s["prediction"] for s in r["samples"]] == list(det["predictions"])
    assert [s["steps_used"] for s in r["samples"]] == list(det["steps_used"])
    assert np.array_equal(np.float32([s["loss"] for s in r["samples"]]), det["loss"])
    assert all(s["linf"] <= 8 / 255 + 1e-6 for s in r["samples"])
    assert r["attack_domain"] == r["eval_domain"] == "adv" and r["eps"] == pytest.approx(8 / 255)
    # Targeted (random targets), L2, restarts, cross-domain, given labels: still the binding's result.
    labels = [3, 1, 4, 1, 5, 9, 2, 6]
    r, adv = attack_float32(server, x, "eps=0.5&alpha=0.1&steps=4&norm=l2&targeted=random&restarts=2&seed=11"
                                       "&attack_domain=clean&eval_domain=adv&labels=" + ",".join(map(str, labels)))
    ref, det = model.pgd(x, np.array(labels), eps=0.5, alpha=0.1, steps=4, norm="l2", targeted=True, restarts=2,
                         seed=11, attack_domain="clean", eval_domain="adv", return_details=True)
    assert np.array_equal(adv, ref)
    assert [s["target"] for s in r["samples"]] == list(det["targets"])
    assert r["targeted"] == "random" and r["norm"] == "l2" and r["restarts"] == 2
    # PNG output: the adversarial pixels rounded to 8 bits.
    body, h = raw(x[:2])
    status, _, r = server.json("POST", "/v1/attack?eps=8/255&steps=5&seed=3&eval_domain=adv", body, h)
    assert status == 200 and r["adversarial"]["format"] == "png"
    ref2 = model.pgd(x[:2], y[:2], eps=8 / 255, alpha=2 / 255, steps=5, seed=3, attack_domain="adv", eval_domain="adv")
    for i, b64 in enumerate(r["adversarial"]["images"]):
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).transpose(2, 0, 1)
        assert np.array_equal(got, np.clip(np.floor(ref2[i] * 255 + 0.5), 0, 255).astype(np.uint8))


def test_attack_equals_cli(server, jpegs, tmp_path):
    """A JPEG batch attacked by the server = `adamant attack` on the same files with the same seed."""
    out = tmp_path / "cli"
    subprocess.run([CLI, "attack", *DOMAINS, *jpegs[:4], "--eps", "4/255", "--steps", "3", "--seed", "5",
                    "--targeted", "random", "-o", str(out)], check=True, capture_output=True)
    report = json.loads((out / "report.json").read_text())
    body, h = multipart([(os.path.basename(p), open(p, "rb").read(), "image/jpeg") for p in jpegs[:4]])
    status, _, r = server.json("POST", "/v1/attack?eps=4/255&steps=3&seed=5&targeted=random", body, h)
    assert status == 200, r
    for s, c in zip(r["samples"], report["images"]):
        assert (s["label"], s["target"], s["prediction"], s["success"], s["steps_used"]) == \
            (c["label"], c["target"], c["prediction"], c["success"], c["steps_used"])
        assert np.float32(s["loss"]) == np.float32(c["loss"])
    for i, b64 in enumerate(r["adversarial"]["images"]):
        assert base64.b64decode(b64) == (out / ("%05d.png" % i)).read_bytes()


# ---------------------------------------------------------------------------------------------
# Errors: a JSON body with the status, and the server keeps serving

def check_error(server, status, kind, method, path, body=None, headers=None):
    got, h, r = server.json(method, path, body, headers)
    assert got == status and r["error"]["status"] == status and r["error"]["kind"] == kind, r
    assert r["error"]["message"]
    return h, r


def test_errors(server, jpegs):
    x = np.zeros((1, 3, 32, 32), np.float32)
    img = {"Content-Type": "image/png"}
    check_error(server, 400, "bad_image", "POST", "/v1/predict", b"not an image", img)
    check_error(server, 400, "bad_image", "POST", "/v1/predict", open(jpegs[0], "rb").read()[:300], {"Content-Type": "image/jpeg"})
    small = io.BytesIO()
    Image.new("RGB", (5, 7)).save(small, format="PNG")
    _, r = check_error(server, 400, "wrong_size", "POST", "/v1/predict", small.getvalue(), img)
    assert "5x7" in r["error"]["message"] and "32x32" in r["error"]["message"]
    status, _, r = server.json("POST", "/v1/predict?resize=true", small.getvalue(), img)   # unless resized
    assert status == 200
    check_error(server, 400, "wrong_size", "POST", "/v1/predict", *raw(np.zeros((1, 3, 16, 16), np.float32)))
    check_error(server, 400, "wrong_size", "POST", "/v1/predict", b"\0" * 100,
                {"Content-Type": "application/octet-stream", "X-Shape": "1,3,32,32"})
    check_error(server, 400, "bad_request", "POST", "/v1/predict", b"\0" * 100, {"Content-Type": "application/octet-stream"})
    check_error(server, 400, "bad_request", "POST", "/v1/predict", b"\0" * 100,
                {"Content-Type": "application/octet-stream", "X-Shape": "a,b"})
    nan = x.copy()
    nan[0, 1, 2, 3] = np.nan
    check_error(server, 400, "bad_request", "POST", "/v1/predict", *raw(nan))
    check_error(server, 400, "bad_request", "POST", "/v1/predict", b"{not json", {"Content-Type": "application/json"})
    check_error(server, 400, "bad_request", "POST", "/v1/predict", b"", img)
    check_error(server, 400, "bad_request", "POST", "/v1/predict", b"--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"})
    check_error(server, 415, "bad_request", "POST", "/v1/predict", b"abc", {"Content-Type": "text/plain"})
    check_error(server, 404, "unknown_domain", "POST", "/v1/predict?domain=nope", *raw(x))
    check_error(server, 404, "unknown_domain", "POST", "/v1/attack?attack_domain=nope", *raw(x))
    check_error(server, 404, "not_found", "GET", "/v2/nothing")
    # Attack parameters out of bounds: 422.
    for q in ["eps=0", "eps=-1", "eps=abc", "alpha=0", "steps=0", "steps=1001", "steps=100&restarts=11", "restarts=0",
              "norm=l3", "loss=dlr", "targeted=10", "targeted=maybe", "labels=10", "labels=1,2", "seed=-1",
              "random_start=perhaps", "format=gif", "attack=fgsm", "bogus=1", "targeted=3&labels=3"]:
        check_error(server, 422, "bad_attack_params", "POST", "/v1/attack?" + q, *raw(x))
    # Pixels outside [0, 1] are bad input for an attack (400), not for a prediction.
    check_error(server, 400, "bad_request", "POST", "/v1/attack", *raw(x + 2))
    assert server.json("POST", "/v1/predict", *raw(x + 2))[0] == 200
    for doc in [{"shape": [1e30, 3, 32, 32], "data": []}, {"shape": [2.5, 3, 32, 32], "data": []},
                {"shape": "1,3,32,32", "data": []}, {"shape": [1, 3, 32, 32], "data": ["a"] * 3072},
                {"shape": [1, 3, 32, 32], "data": 5}, {"images": ["%%% not base64"]}, {"images": 3}, [1, 2],
                {"shape": [True, 3, 32, 32], "data": []}, {"nothing": 1}]:
        status, _, r = server.json("POST", "/v1/predict", json.dumps(doc), {"Content-Type": "application/json"})
        assert status == 400 and r["error"]["kind"] in ("bad_request", "bad_image", "wrong_size"), (doc, r)
    check_error(server, 400, "bad_request", "POST", "/v1/predict", b"x", {"Content-Type": "multipart/form-data"})
    # Still serving.
    assert server.json("GET", "/healthz")[0] == 200


def test_hostile_bodies(server, jpegs):
    """Random and truncated bodies of every content type: each a JSON 4xx, the server unharmed."""
    rng = np.random.default_rng(3)
    good = open(jpegs[1], "rb").read()
    body, mp = multipart([("a.jpg", good, "image/jpeg")])
    kinds = [{"Content-Type": "image/jpeg"}, {"Content-Type": "image/png"}, mp, {"Content-Type": "application/json"},
             {"Content-Type": "application/octet-stream", "X-Shape": "1,3,32,32"}]
    seeds = [good, png_bytes(np.zeros((3, 32, 32), np.float32)), body, b'{"shape":[1,3,32,32],"data":[0]}', b"\0" * 12288]
    for i in range(150):
        k = i % len(kinds)
        data = bytearray(seeds[k])
        if i % 3 == 0:
            data = data[: rng.integers(0, len(data))]                 # truncated
        else:
            for _ in range(rng.integers(1, 20)):                      # corrupted bytes
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        path = "/v1/predict" if i % 2 else "/v1/attack?steps=1"
        status, h, out = server.request("POST", path, bytes(data), kinds[k])
        assert status in (200, 400, 413, 415, 422), (i, status, out[:200])
        if status != 200:
            assert json.loads(out)["error"]["status"] == status
    assert server.json("GET", "/healthz")[0] == 200


# ---------------------------------------------------------------------------------------------
# Limits, overload and cancellation on a small server

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("small"), "--threads", "1", "--max-queue", "1", "--max-batch", "4",
               "--max-body", "100000", "--max-steps", "100000")
    yield s
    assert s.stop() == 0


def test_body_and_batch_limits(small):
    h, _ = check_error(small, 413, "too_large", "POST", "/v1/predict", *raw(np.zeros((5, 3, 32, 32), np.float32)))
    # Over --max-body by Content-Length, and in a chunked body (no length given).
    check_error(small, 413, "too_large", "POST", "/v1/predict", b"\0" * 100001,
                {"Content-Type": "application/octet-stream", "X-Shape": "8,3,32,32"})
    c = http.client.HTTPConnection("127.0.0.1", small.port, timeout=30)
    c.request("POST", "/v1/predict", body=iter([b"\0" * 60000, b"\0" * 60000]),
              headers={"Content-Type": "application/octet-stream", "X-Shape": "1,3,32,32"}, encode_chunked=True)
    r = c.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["kind"] == "too_large"
    c.close()
    check_error(small, 413, "too_large", "POST", "/v1/attack", *raw(np.zeros((5, 3, 32, 32), np.float32)))
    assert small.json("POST", "/v1/predict", *raw(np.zeros((4, 3, 32, 32), np.float32)))[0] == 200


def open_attack(server, x, query):
    """Sends an attack request and returns the open connection without reading the answer."""
    body, h = raw(x)
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    c.request("POST", "/v1/attack?" + query, body=body, headers=h)
    return c


def wait_for(cond, seconds=30):
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_overload_503_and_cancellation(small):
    x = np.random.default_rng(1).random((4, 3, 32, 32), dtype=np.float32)
    before = small.metrics()
    long = "eps=8/255&steps=50000&seed=1"     # minutes of work unless cancelled
    a = open_attack(small, x, long)            # runs on the one worker
    wait_for(lambda: small.metrics().get("adamant_serve_running_jobs", 0) == 1)
    b = open_attack(small, x, long)            # waits in the queue (--max-queue 1)
    wait_for(lambda: small.metrics().get("adamant_serve_queued_jobs", 0) == 1)
    h, r = check_error(small, 503, "overloaded", "POST", "/v1/predict", *raw(x[:1]))
    assert int(h["retry-after"]) >= 1
    # The clients go away: both attacks stop (the queued one before it starts) and the worker is free.
    t0 = time.monotonic()
    a.sock.shutdown(socket.SHUT_RDWR)
    a.close()
    b.sock.shutdown(socket.SHUT_RDWR)
    b.close()
    wait_for(lambda: small.metrics().get('adamant_serve_errors_total{endpoint="attack",kind="cancelled"}', 0)
             - before.get('adamant_serve_errors_total{endpoint="attack",kind="cancelled"}', 0) == 2, 20)
    status, _, r = small.json("POST", "/v1/predict", *raw(x[:1]))
    assert status == 200 and time.monotonic() - t0 < 20
    m = small.metrics()
    assert m['adamant_serve_errors_total{endpoint="predict",kind="overloaded"}'] >= 1
    assert m["adamant_serve_running_jobs"] == 0 and m["adamant_serve_queued_jobs"] == 0


# ---------------------------------------------------------------------------------------------
# Dynamic batching changes no result

def test_dynamic_batching_bit_for_bit(tmp_path, server, model):
    rng = np.random.default_rng(7)
    xs = [rng.random((1 + i % 3, 3, 32, 32), dtype=np.float32) for i in range(12)]
    alone = [logits_of(server.json("POST", "/v1/predict?domain=adv", *raw(x))[2]) for x in xs]
    b = Server(tmp_path, "--threads", "1", "--batch-window-ms", "200", "--max-batch", "16")
    try:
        results = [None] * len(xs)

        def send(i):
            results[i] = b.json("POST", "/v1/predict?domain=adv", *raw(xs[i]))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        batches = []
        for i, (status, h, r) in enumerate(results):
            assert status == 200
            assert np.array_equal(logits_of(r), alone[i]) and np.array_equal(alone[i], model.predict(xs[i], domain="adv"))
            batches.append(int(h["x-adamant-batch"]))
        assert max(batches) > 3, batches          # requests were really joined
        assert max(batches) <= 16
        m = b.metrics()
        assert m["adamant_serve_predict_batch_images_count"] < len(xs)
    finally:
        assert b.stop() == 0


# ---------------------------------------------------------------------------------------------
# Metrics, graceful shutdown, the `adamant serve` entry point

def test_metrics_count_requests(tmp_path):
    s = Server(tmp_path, "--threads", "1")
    try:
        x = np.zeros((2, 3, 32, 32), np.float32)
        for _ in range(3):
            assert s.json("POST", "/v1/predict", *raw(x))[0] == 200
        assert s.json("POST", "/v1/predict?domain=zzz", *raw(x))[0] == 404
        assert s.json("POST", "/v1/attack?steps=2", *raw(x))[0] == 200
        assert s.json("POST", "/v1/attack?eps=0", *raw(x))[0] == 422
        m = s.metrics()
        assert m['adamant_serve_requests_total{endpoint="predict",status="200"}'] == 3
        assert m['adamant_serve_requests_total{endpoint="predict",status="404"}'] == 1
        assert m['adamant_serve_requests_total{endpoint="attack",status="200"}'] == 1
        assert m['adamant_serve_errors_total{endpoint="predict",kind="unknown_domain"}'] == 1
        assert m['adamant_serve_errors_total{endpoint="attack",kind="bad_attack_params"}'] == 1
        assert m['adamant_serve_request_duration_seconds_count{endpoint="predict"}'] == 4
        assert m['adamant_serve_images_total{endpoint="predict"}'] == 6
        assert m["adamant_serve_predict_batch_images_sum"] == 6
        assert m["adamant_serve_in_flight_requests"] == 1     # this /metrics request
        # A job leaves the gauges before its client gets the answer (CI once read running_jobs 1 here).
        for path in ["/v1/predict"] * 20 + ["/v1/attack?steps=1"] * 5:
            assert s.json("POST", path, *raw(x[:1]))[0] == 200
            m = s.metrics()
            assert (m["adamant_serve_running_jobs"], m["adamant_serve_queued_jobs"]) == (0, 0), path
    finally:
        assert s.stop() == 0


def test_sigterm_finishes_request_in_flight(tmp_path):
    s = Server(tmp_path, "--threads", "1", "--max-steps", "100000")
    try:
        x = np.random.default_rng(2).random((4, 3, 32, 32), dtype=np.float32)
        t0 = time.monotonic()
        assert s.json("POST", "/v1/attack?steps=50", *raw(x))[0] == 200
        per_request = time.monotonic() - t0
        steps = max(50, int(50 * 1.0 / max(per_request, 1e-3)))   # about a second of work
        c = open_attack(s, x, "steps=%d" % min(steps, 100000))
        wait_for(lambda: s.metrics().get("adamant_serve_running_jobs", 0) == 1)
        s.proc.send_signal(signal.SIGTERM)
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["batch"] == 4
        c.close()
    finally:
        assert s.stop() == 0


def test_cli_serve_entry_point(tmp_path):
    r = subprocess.run([CLI, "serve", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--batch-window-ms" in r.stdout and "--max-body" in r.stdout
    env = dict(os.environ, ADAMANT_SERVE=str(tmp_path / "missing"))
    r = subprocess.run([CLI, "serve", "x.onnx"], capture_output=True, text=True, env=env)
    assert r.returncode == 66 and "adamant-serve" in r.stderr and "missing" in r.stderr
    r = subprocess.run([SERVE, "--port", "70000", "m.onnx"], capture_output=True, text=True)
    assert r.returncode == 64 and "--port" in r.stderr
    r = subprocess.run([SERVE, str(tmp_path / "nope.onnx"), "--port", "0"], capture_output=True, text=True)
    assert r.returncode == 66 and "cannot load the model" in r.stderr


def test_openapi_lists_every_endpoint(server):
    """Sources/AdamantServe/openapi.yaml documents exactly the served paths, each answering."""
    spec = open(os.path.join(REPO, "Sources", "AdamantServe", "openapi.yaml")).read()
    paths = set(re.findall(r"^  (/[^:\s]+):$", spec, re.M))
    assert paths == {"/v1/predict", "/v1/attack", "/v1/model", "/healthz", "/metrics"}
    for p in ["/v1/model", "/healthz", "/metrics"]:
        assert server.request("GET", p)[0] == 200
    documented = set(re.search(r"kind: \{type: string, enum: \[([^\]]+)\]", spec).group(1).split(", "))
    src = "".join(open(os.path.join(REPO, "Sources", "AdamantServe", f)).read()
                  for f in os.listdir(os.path.join(REPO, "Sources", "AdamantServe")) if f.endswith(".swift"))
    used = set(re.findall(r'kind: "([a-z_]+)"', src))
    assert used and used <= documented, used - documented
