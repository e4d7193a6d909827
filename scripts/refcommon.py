"""Shared helpers for adamant's Python reference tooling (no torch needed).

Imported by onnx_torch.py, make_grad_fixtures.py, pgd_reference.py and
make_demo_data.py; not meant to be run on its own.  Works under both the
pyenv `python3` (numpy, Pillow, onnx, onnxruntime) and Debian's
`/usr/bin/python3` (numpy, Pillow, torch, python3-onnx).

Contents:
  * CIFAR-10 test-set loading straight from shared/data/cifar10/test.tar.gz
    (JPEGs decoded with Pillow, pixels as float32 in [0,1], NCHW), with an
    optional .npz cache in /tmp so repeated runs don't re-decode 10,000 files.
  * The registry of the 8 shared models (path + pixel-space mean/std that has
    to be applied before the graph: only the external models need it).
"""
import io
import os
import tarfile

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)
DEFAULT_SHARED = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared"))


def shared_dir(override=None):
    return override or os.environ.get("ADAMANT_SHARED") or DEFAULT_SHARED


# name -> (relative path under shared/models, needs external mean/std)
MODELS = {
    "mbn_resnet8.clean": ("mbn/mbn_resnet8.clean.onnx", False),
    "mbn_resnet8.adv": ("mbn/mbn_resnet8.adv.onnx", False),
    "mbn_resnet14.clean": ("mbn/mbn_resnet14.clean.onnx", False),
    "mbn_resnet14.adv": ("mbn/mbn_resnet14.adv.onnx", False),
    "mbn_resnet20.clean": ("mbn/mbn_resnet20.clean.onnx", False),
    "mbn_resnet20.adv": ("mbn/mbn_resnet20.adv.onnx", False),
    "cifar10_resnet_2b": ("external/cifar10_resnet_2b.onnx", True),
    "cifar10_sri_resnet_a": ("external/cifar10_sri_resnet_a.onnx", True),
}


def model_info(name, shared=None):
    """Return (onnx path, mean or None, std or None) for a registered model."""
    rel, ext = MODELS[name]
    path = os.path.join(shared_dir(shared), "models", rel)
    if ext:
        return path, CIFAR_MEAN, CIFAR_STD
    return path, None, None


def _label_of(path):
    # test/<class>/NNNN.jpg
    parts = path.split("/")
    return CLASSES.index(parts[-2])


def list_jpegs(tar_path):
    """Sorted list of (member name) of all .jpg files in the tarball."""
    with tarfile.open(tar_path, "r:gz") as tf:
        names = [m.name for m in tf.getmembers() if m.isfile() and m.name.endswith(".jpg")]
    return sorted(names)


def decode_jpeg(data):
    from PIL import Image
    img = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(img, dtype=np.uint8)  # HWC


def load_cifar10_test(shared=None, cache=True):
    """Load all CIFAR-10 test images, sorted by path.

    Returns (paths list[str], images uint8 [N,32,32,3], labels int64 [N]).
    """
    tar_path = os.path.join(shared_dir(shared), "data", "cifar10", "test.tar.gz")
    st = os.stat(tar_path)
    cache_path = "/tmp/adamant_cifar10_test_%d_%d.npz" % (st.st_size, int(st.st_mtime))
    if cache and os.path.exists(cache_path):
        z = np.load(cache_path)
        return [str(p) for p in z["paths"]], z["images"], z["labels"]
    blobs = {}
    with tarfile.open(tar_path, "r:gz") as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(".jpg"):
                blobs[m.name] = tf.extractfile(m).read()
    paths = sorted(blobs)
    images = np.stack([decode_jpeg(blobs[p]) for p in paths])
    labels = np.array([_label_of(p) for p in paths], dtype=np.int64)
    if cache:
        tmp = cache_path + ".tmp.npz"
        np.savez(tmp, paths=np.array(paths), images=images, labels=labels)
        os.replace(tmp, cache_path)
    return paths, images, labels


def to_nchw_float(images_u8):
    """uint8 NHWC -> float32 NCHW in [0,1] (same as torchvision ToTensor)."""
    return (images_u8.astype(np.float32) / np.float32(255.0)).transpose(0, 3, 1, 2).copy()


def first_per_class(paths, labels, k=1):
    """Indices of the first k images (by sorted path) of each class, class order."""
    out = []
    for c in range(len(CLASSES)):
        idx = [i for i, l in enumerate(labels) if l == c][:k]
        out.extend(idx)
    return out
