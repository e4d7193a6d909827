"""The command line's errors (issue #8): every bad option value gets a message naming the option,
one exit status per kind of error (documented in `adamant --help` and the README), never a signal.

Exit statuses: 0 ok, 1 the work failed, 64 usage / bad option value, 65 bad model or data,
66 missing input file, 70 internal error, 73 cannot create an output.

Uses the CLI at $ADAMANT_CLI, else dist/bin/adamant, and the model and images shipped in examples/.
"""
import os
import subprocess

import pytest

from conftest import CLI, REPO

MODEL = os.path.join(REPO, "examples", "models", "mbn_resnet8.clean.onnx")
ADV = os.path.join(REPO, "examples", "models", "mbn_resnet8.adv.onnx")
DATA = os.path.join(REPO, "examples", "data", "cifar10-demo.tar.gz")
GARBAGE = os.path.join(REPO, "Tests", "Fixtures", "hostile", "garbage.onnx")

USAGE, DATAERR, NOINPUT, CANTCREAT = 64, 65, 66, 73


def run(*args, timeout=300):
    if not os.path.exists(CLI):
        pytest.fail("adamant CLI not found at %s: run `make` or set ADAMANT_CLI" % CLI)
    r = subprocess.run([CLI] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode >= 0, "killed by signal %d: %s" % (-r.returncode, r.stderr[-500:])
    return r


def expect(code, args, *names, absent=()):
    """Runs adamant with args; checks the exit status and that stderr names every `names`."""
    r = run(*args)
    assert r.returncode == code, (args, r.returncode, r.stderr[-600:])
    for n in names:
        assert n in r.stderr, (args, n, r.stderr[-600:])
    for n in absent:
        assert n not in r.stderr, (args, n, r.stderr[-600:])
    assert "NSCocoaErrorDomain" not in r.stderr and "Fatal error" not in r.stderr
    return r


EVAL = ["eval", MODEL, "--data", DATA, "--limit", "4"]
PREDICT = ["predict", MODEL, DATA, "--limit", "4"]

# (argv, option the message must name, extra text it must contain)
BAD_VALUES = [
    # the reported ones
    (["predict", MODEL, DATA, "--batch-size=-1"], "--batch-size", "-1"),
    (["eval", MODEL, "--data", DATA, "--batch-size=-1"], "--batch-size", "-1"),
    (["eval", MODEL, "--data", DATA, "--limit", "-5"], "--limit", "-5"),
    (["eval", MODEL, "--data", DATA, "--limit=-5"], "--limit", "-5"),
    (["predict", MODEL, DATA, "--limit", "-5"], "--limit", "-5"),
    # predict
    (PREDICT + ["--batch-size", "0"], "--batch-size", "0"),
    (PREDICT + ["--top-k", "0"], "--top-k", "0"),
    (PREDICT + ["--top-k", "-3"], "--top-k", "-3"),
    (PREDICT + ["--batch-size", "99999999999999999999999"], "--batch-size", ""),
    (PREDICT + ["--batch-size", "abc"], "--batch-size", "abc"),
    (PREDICT + ["--domains", "nope"], "--domains", "nope"),
    (PREDICT + ["--threads", "-1"], "--threads", "-1"),
    (PREDICT + ["--threads", "5000"], "--threads", "5000"),
    (PREDICT + ["--isa", "avx1024"], "--isa", "avx1024"),
    (PREDICT + ["--mean", "0.5,nan,0.5"], "--mean", "nan"),
    (PREDICT + ["--mean", "0.5,x,0.5"], "--mean", "x"),
    (PREDICT + ["--std", "0,1,1"], "--std", "0"),
    (PREDICT + ["--std", "-1,1,1"], "--std", "-1"),
    (PREDICT + ["--mean", "0.5,0.5"], "--mean", "2 values"),
    (PREDICT + ["--pixel-range", "1,0"], "--pixel-range", "1,0"),
    (PREDICT + ["--pixel-range", "0,inf"], "--pixel-range", "inf"),
    (PREDICT + ["--default-domain", "nope"], "--default-domain", "'nope' is not among the model's domains: default"),
    (PREDICT + ["--memory-limit", "abc"], "--memory-limit", "abc"),
    (PREDICT + ["--memory-limit", "0"], "--memory-limit", "'0'"),
    (PREDICT + ["--memory-limit", "-5M"], "--memory-limit", "-5M"),
    # attack settings (eval, attack, calibrate share them)
    (EVAL + ["--eps", "1e-45"], "--eps", "too small"),
    (EVAL + ["--eps", "0"], "--eps", "positive"),
    (EVAL + ["--eps", "-8/255"], "--eps", "positive"),
    (EVAL + ["--eps=-0.1"], "--eps", "positive"),
    (EVAL + ["--eps", "nan"], "--eps", "finite"),
    (EVAL + ["--eps", "inf"], "--eps", "finite"),
    (EVAL + ["--eps", "1e39"], "--eps", "finite"),
    (EVAL + ["--eps", "8/0"], "--eps", "not a number"),
    (EVAL + ["--eps", "abc"], "--eps", "not a number"),
    (EVAL + ["--alpha", "0"], "--alpha", "positive"),
    (EVAL + ["--alpha", "nan"], "--alpha", "finite"),
    (EVAL + ["--alpha", "-1"], "--alpha", "positive"),
    (EVAL + ["--steps", "0"], "--steps", "'0'"),
    (EVAL + ["--steps", "-3"], "--steps", "'-3'"),
    (EVAL + ["--steps", "10,x"], "--steps", "10,x"),
    (EVAL + ["--steps", "10,,20"], "--steps", "10,,20"),
    (EVAL + ["--steps", "2147483647"], "--steps", "2147483647"),
    (EVAL + ["--restarts", "0"], "--restarts", "0"),
    (EVAL + ["--restarts", "-2"], "--restarts", "-2"),
    (EVAL + ["--steps", "1000", "--restarts", "1000"], "--restarts", "1000 x 1000"),
    (EVAL + ["--attack", "cw"], "--attack", "cw"),
    (EVAL + ["--norm", "l3"], "--norm", "l3"),
    (EVAL + ["--loss", "hinge"], "--loss", "hinge"),
    (EVAL + ["--targeted", "-1"], "--targeted", "-1"),
    (EVAL + ["--targeted", "dog"], "--targeted", "dog"),
    (EVAL + ["--targeted", "10"], "--targeted", "10 classes"),
    (EVAL + ["--seed", "-1"], "--seed", "-1"),
    (EVAL + ["--domains", "nope"], "--domains", "nope"),
    (EVAL + ["--attack-domain", "nope"], "--attack-domain", "nope"),
    # attack
    (["attack", MODEL, DATA, "--label", "-1"], "--label", "-1"),
    (["attack", MODEL, DATA, "--limit", "2", "--label", "99", "-o", "{tmp}/adv"], "--label", "10 classes"),
    (["attack", MODEL, DATA, "--batch-size", "0"], "--batch-size", "0"),
    (["attack", MODEL, DATA, "--eval-domain", "nope", "-o", "{tmp}/adv"], "--eval-domain", "nope"),
    (["attack", MODEL, DATA, "--fgsm", "--eps", "-1"], "--eps", "positive"),
    # calibrate
    (["calibrate", MODEL, "--data", DATA, "--name", "c2", "-o", "{tmp}/c.onnx", "--batch-size", "1"], "--batch-size", "1"),
    (["calibrate", MODEL, "--data", DATA, "--name", "c2", "-o", "{tmp}/c.onnx", "--limit", "-1"], "--limit", "-1"),
    (["calibrate", MODEL, "--data", DATA, "--name", "c2", "-o", "{tmp}/c.onnx", "--source", "fgsm"], "--source", "fgsm"),
    (["calibrate", MODEL, "--data", DATA, "--name", "c2", "-o", "{tmp}/c.onnx", "--base", "nope"], "--base", "nope"),
    (["calibrate", MODEL, "--data", DATA, "--name", "default", "-o", "{tmp}/c.onnx", "--limit", "4"], "--name", "default"),
    # merge
    (["merge", "--domain", "clean", "-o", "{tmp}/m.onnx"], "--domain", "NAME=PATH"),
    (["merge", "--domain", "=" + MODEL, "-o", "{tmp}/m.onnx"], "--domain", "NAME=PATH"),
    (["merge", "-o", "{tmp}/m.onnx"], "--domain", ""),
    # synth
    (["synth", "--depth", "-5", "-o", "{tmp}/s.onnx"], "--depth", "-5"),
    (["synth", "--depth", "0", "-o", "{tmp}/s.onnx"], "--depth", "0"),
    (["synth", "--depth", "51", "-o", "{tmp}/s.onnx"], "--depth", "51"),
    (["synth", "--depth", "1000000000000", "-o", "{tmp}/s.onnx"], "--depth", "1000000000000"),
    (["synth", "--cifar-depth", "9", "-o", "{tmp}/s.onnx"], "--cifar-depth", "9"),
    (["synth", "--cifar-depth", "-2", "-o", "{tmp}/s.onnx"], "--cifar-depth", "-2"),
    (["synth", "--depth", "50", "--cifar-depth", "20", "-o", "{tmp}/s.onnx"], "--cifar-depth", ""),
    (["synth", "--cifar-depth", "20", "--seed", "-1", "-o", "{tmp}/s.onnx"], "--seed", "-1"),
    # bench
    (["bench", MODEL, "--iters", "0"], "--iters", "0"),
    (["bench", MODEL, "--iters", "-4"], "--iters", "-4"),
    (["bench", MODEL, "--budget", "nan"], "--budget", "nan"),
    (["bench", MODEL, "--budget", "inf"], "--budget", "inf"),
    (["bench", MODEL, "--budget", "-1"], "--budget", "-1"),
    (["bench", MODEL, "--threads", "-1"], "--threads", "-1"),
    (["bench", MODEL, "--batch", "0"], "--batch", "0"),
    (["bench", MODEL, "--batch", "1,-8"], "--batch", "-8"),
    (["bench", MODEL, "--batch", "1,x"], "--batch", "x"),
    (["bench", "--depths", "51"], "--depths", "51"),
    (["bench", "--cifar-depths", "99999999"], "--cifar-depths", "99999999"),
    (["bench", "--cifar-batch", "0", "--cifar-depths", "20"], "--cifar-batch", "0"),
    # info
    (["info", MODEL, "--default-domain", "nope"], "--default-domain", "not among the model's domains"),
    (["info", MODEL, "--threads=-3"], "--threads", "-3"),
    (["info", MODEL, "--no-such-option"], "--no-such-option", ""),
]


@pytest.mark.parametrize("argv,option,text", BAD_VALUES,
                         ids=[" ".join(a[0:1] + [x for x in a[1:] if x.startswith("-")])[:80] for a, _, _ in BAD_VALUES])
def test_bad_option_value_is_a_usage_error_naming_the_option(tmp_path, argv, option, text):
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    names = [option] + ([text] if text else [])
    # --eps 1e-45 used to complain about alpha: the message must name the real problem
    absent = ["--alpha"] if "--eps" in argv and option == "--eps" else []
    expect(USAGE, args, *names, absent=absent)


def test_eps_1e45_does_not_blame_alpha():
    r = expect(USAGE, EVAL + ["--eps", "1e-45"], "--eps")
    assert "alpha" not in r.stderr.split("Usage:")[0], r.stderr


@pytest.mark.parametrize("argv,option,path", [
    (EVAL + ["--attack", "none", "--json", "/nonexistent/x.json"], "--json", "/nonexistent/x.json"),
    (PREDICT + ["--json", "/nonexistent/x.json"], "--json", "/nonexistent/x.json"),
    (["calibrate", MODEL, "--data", DATA, "--name", "c2", "--limit", "4", "-o", "/nonexistent/c.onnx"],
     "--output", "/nonexistent/c.onnx"),
    (["merge", "--domain", "clean=" + MODEL, "-o", "/nonexistent/m.onnx"], "--output", "/nonexistent/m.onnx"),
    (["synth", "--cifar-depth", "8", "-o", "/nonexistent/s.onnx"], "--output", "/nonexistent/s.onnx"),
    (["bench", MODEL, "--json", "/nonexistent/b.json"], "--json", "/nonexistent/b.json"),
    (["bench", MODEL, "--csv", "/nonexistent/b.csv"], "--csv", "/nonexistent/b.csv"),
])
def test_unwritable_output_says_which_path_and_why(argv, option, path):
    expect(CANTCREAT, argv, option, path, "No such file or directory")


def test_output_that_is_a_directory_or_under_a_file(tmp_path):
    expect(CANTCREAT, EVAL + ["--attack", "none", "--json", str(tmp_path)], "--json", "is a directory")
    f = tmp_path / "file"
    f.write_text("x")
    expect(CANTCREAT, ["attack", MODEL, DATA, "--limit", "2", "-o", str(f / "sub")], "--output", "not a directory")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        expect(CANTCREAT, PREDICT + ["--json", str(ro / "x.json")], "--json", "Permission denied")


def test_missing_inputs_exit_66(tmp_path):
    expect(NOINPUT, ["info", str(tmp_path / "none.onnx")], "none.onnx", "No such file or directory")
    expect(NOINPUT, ["eval", MODEL, "--data", str(tmp_path / "none.tar.gz"), "--attack", "none"],
           "none.tar.gz", "No such file or directory")
    expect(NOINPUT, ["predict", MODEL, str(tmp_path / "none.png")], "none.png", "No such file or directory")
    expect(NOINPUT, ["merge", "--domain", "clean=%s" % (tmp_path / "none.onnx"), "-o", str(tmp_path / "m.onnx")],
           "none.onnx")
    expect(NOINPUT, ["bench", str(tmp_path / "none.onnx")], "none.onnx", "No such file or directory")


def test_bad_model_or_data_exit_65(tmp_path):
    expect(DATAERR, ["info", GARBAGE], "garbage.onnx")
    expect(DATAERR, ["predict", GARBAGE, DATA], "garbage.onnx")
    notimage = tmp_path / "x.png"
    notimage.write_bytes(b"not a png at all")
    expect(DATAERR, ["predict", MODEL, str(notimage)], "x.png")
    notdata = tmp_path / "d.tar.gz"
    notdata.write_bytes(b"\x1f\x8b garbage")
    expect(DATAERR, ["eval", MODEL, "--data", str(notdata), "--attack", "none"], "d.tar.gz")


def test_help_documents_the_exit_statuses():
    r = run("--help")
    assert r.returncode == 0
    for line in ("64  usage", "65  bad data", "66  missing input", "73  cannot create", "70  internal", "1   the work failed"):
        assert line in r.stdout, (line, r.stdout)


def test_good_runs_exit_0_and_write_json(tmp_path):
    out = tmp_path / "p.json"
    r = run(*(PREDICT + ["--json", str(out), "--batch-size", "3"]))
    assert r.returncode == 0, r.stderr[-500:]
    assert out.exists() and out.read_text().lstrip().startswith("[")
    out = tmp_path / "e.json"
    r = run("eval", "--data", DATA, "--steps", "1", "--json", str(out), "--domain", "clean=" + MODEL,
            "--domain", "adv=" + ADV, "--batch-size", "3", "--limit=6")
    assert r.returncode == 0, r.stderr[-500:]
    assert out.exists()


# ---- images that do not fit the model (issue #8) ---------------------------------------------

def _png(path, pixels, mode):
    from PIL import Image
    Image.fromarray(pixels, mode).save(path)
    return str(path)


def _top_logits(tmp_path, image, *extra):
    out = tmp_path / ("%s.json" % os.path.basename(image))
    r = run("predict", MODEL, image, "--json", str(out), *extra)
    assert r.returncode == 0, r.stderr[-600:]
    import json
    return json.loads(out.read_text())[0]["top"], r


def test_wrong_size_image_is_an_error_naming_file_and_size(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    tiny = _png(tmp_path / "tiny.png", rng.integers(0, 256, (1, 1, 3), dtype=np.uint8), "RGB")
    wide = _png(tmp_path / "wide.png", rng.integers(0, 256, (20, 40, 3), dtype=np.uint8), "RGB")
    good = _png(tmp_path / "good.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")
    expect(DATAERR, ["predict", MODEL, tiny], "tiny.png", "1x1 pixels", "expects 32x32", "--resize")
    expect(DATAERR, ["predict", MODEL, good, wide], "wide.png", "40x20 pixels", "expects 32x32", absent=["good.png"])
    expect(DATAERR, ["attack", MODEL, wide, "--steps", "1", "-o", str(tmp_path / "adv")], "wide.png", "--resize")
    # --resize scales them (bilinear): they run, and an image of the right size is left as it is
    for image in (tiny, wide):
        r = run("predict", MODEL, image, "--resize")
        assert r.returncode == 0, r.stderr[-600:]
    assert _top_logits(tmp_path, good)[0] == _top_logits(tmp_path, good, "--resize")[0]
    r = run("attack", MODEL, wide, "--resize", "--steps", "1", "-o", str(tmp_path / "adv"))
    assert r.returncode == 0, r.stderr[-600:]


def test_grayscale_image_is_replicated_with_a_warning(tmp_path):
    import numpy as np
    g = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    gray = _png(tmp_path / "gray.png", g, "L")
    rgb = _png(tmp_path / "rgb.png", np.stack([g, g, g], axis=-1), "RGB")
    top_gray, r = _top_logits(tmp_path, gray)
    assert "warning" in r.stderr and "gray.png" in r.stderr and "grayscale" in r.stderr, r.stderr
    top_rgb, r2 = _top_logits(tmp_path, rgb)
    assert "grayscale" not in r2.stderr, r2.stderr
    assert top_gray == top_rgb  # R = G = B: the same pixels as the RGB file
    # a 1x1 grayscale PNG: the size error wins (named), the warning still says what was read
    tiny = _png(tmp_path / "tinygray.png", g[:1, :1], "L")
    expect(DATAERR, ["predict", MODEL, tiny], "tinygray.png", "1x1 pixels", "--resize")


def test_memory_limit_option(tmp_path):
    expect(1, PREDICT + ["--memory-limit", "1K"], "memory limit", "weights")
    r = expect(1, PREDICT + ["--memory-limit", "2M"], "memory limit", "predict on a batch of 4")
    r = run(*(PREDICT + ["--memory-limit", "1G"]))
    assert r.returncode == 0, r.stderr[-600:]
