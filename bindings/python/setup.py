"""Build hook: bundle libadamant.so into the package when it has been built.

`pip install ./bindings/python` copies (after building it with `make dist` when it is missing and
a Swift toolchain is available) the first of
    $ADAMANT_LIBRARY
    <repo>/dist/lib/libadamant.so          (made by `make` / `make dist`)
into adamant/lib/libadamant.so of the built package, which the bindings load
when ADAMANT_LIBRARY is not set at run time. Without a built library the
package still installs and then finds libadamant through ADAMANT_LIBRARY or
the system's library path at import time. Everything else is in pyproject.toml.
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


def built_library():
    """Path of the libadamant.so to bundle, or None."""
    for p in (os.environ.get("ADAMANT_LIBRARY"),
              os.path.join(HERE, "..", "..", "dist", "lib", "libadamant.so")):
        if p and os.path.isfile(p):
            return os.path.normpath(p)
    return None


class BuildPyWithLibrary(build_py):
    """build_py that also copies libadamant.so into <build>/adamant/lib/."""

    def run(self):
        super().run()
        lib = built_library()
        repo = os.path.normpath(os.path.join(HERE, "..", ".."))
        if lib is None and os.path.isfile(os.path.join(repo, "Makefile")) and shutil.which("swift"):
            # Inside the adamant repository with a Swift toolchain: build the library first.
            self.announce("adamant: building libadamant.so with `make dist` ...", level=2)
            subprocess.run(["make", "-C", repo, "dist"], check=True)
            lib = built_library()
        if lib is None:
            self.announce("adamant: no built libadamant.so found (run `make` at the repo root to bundle "
                          "it); the package will look for it at import time", level=2)
            return
        dst_dir = os.path.join(self.build_lib, "adamant", "lib")
        os.makedirs(dst_dir, exist_ok=True)
        dst = os.path.join(dst_dir, "libadamant.so")
        shutil.copyfile(lib, dst)
        os.chmod(dst, 0o755)
        self.announce("adamant: bundled %s" % lib, level=2)


class MaybeBinaryDistribution(Distribution):
    """Marks the wheel platform-specific when it carries the shared library."""

    def has_ext_modules(self):
        return built_library() is not None


try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel


class BdistWheelAnyPython(bdist_wheel):
    """A wheel carrying libadamant.so is tied to the platform, not to a Python version or ABI
    (the bindings are ctypes): tag it py3-none-<platform>."""

    def get_tag(self):
        impl, abi, plat = super().get_tag()
        return ("py3", "none", plat) if built_library() is not None else (impl, abi, plat)


setup(cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": BdistWheelAnyPython},
      distclass=MaybeBinaryDistribution)
