"""Thread safety: one model, a context per thread."""
import threading

import numpy as np

import adamant
from conftest import example_or_shared_mbn8


def test_concurrent_predict_matches_sequential(cifar_mixed):
    m = adamant.load({"clean": example_or_shared_mbn8("clean"), "adv": example_or_shared_mbn8("adv")})
    x, y = cifar_mixed
    work = [(x[i * 8:(i + 1) * 8], "clean" if i % 2 else "adv") for i in range(8)]
    expected = [m.predict(xb, domain=d) for xb, d in work]
    exp_grad = [m.gradient(xb, y[:8], domain=d)[1] for xb, d in work]
    results = {}
    contexts = {}
    errors = []
    start, end = threading.Barrier(2), threading.Barrier(2)

    def run(tid):
        try:
            start.wait()
            for rep in range(5):
                for i, (xb, d) in enumerate(work):
                    results[(tid, rep, i)] = m.predict(xb, domain=d)
                    if rep == 0:
                        results[(tid, "g", i)] = m.gradient(xb, y[:8], domain=d)[1]
            contexts[tid] = m._ctx().ptr
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            end.wait()  # both contexts alive while they are compared

    threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert contexts[0] != contexts[1]  # one context per thread
    for tid in range(2):
        for i in range(len(work)):
            np.testing.assert_allclose(results[(tid, "g", i)], exp_grad[i], rtol=1e-6, atol=1e-7)
            for rep in range(5):
                np.testing.assert_allclose(results[(tid, rep, i)], expected[i], rtol=1e-6, atol=1e-6)


def test_model_outlives_thread_contexts(cifar_mixed):
    x, _ = cifar_mixed
    m = adamant.load(example_or_shared_mbn8("clean"))
    out = []
    t = threading.Thread(target=lambda: out.append(m.predict(x[:2])))
    t.start()
    t.join()
    assert np.array_equal(out[0], m.predict(x[:2]))
    del m  # frees this thread's context, then the model


def test_close_while_other_thread_predicts(cifar_mixed):
    """Closing a model while another thread uses it ends that thread's work with an error, not a crash."""
    import time
    x, _ = cifar_mixed
    m = adamant.load(example_or_shared_mbn8("clean"))
    outcome = []

    def worker():
        try:
            for _ in range(10000):
                m.predict(x[:4])
            outcome.append("finished")
        except adamant.InvalidArgument as e:
            outcome.append(str(e))

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.2)
    m.close()
    t.join()
    assert outcome and ("closed" in outcome[0] or outcome[0] == "finished")
