#!/usr/bin/env python3
"""Compiles every kernels/*.cu with NVRTC for real GPU architectures (default sm_80
and sm_90) and prints the log, including ptxas' register / spill report.

No GPU and no CUDA toolkit needed, only libnvrtc (plain ctypes, no other package):

    python3 -m venv /work/venv-nvrtc
    /work/venv-nvrtc/bin/pip install nvidia-cuda-nvrtc-cu12
    /work/venv-nvrtc/bin/python scripts/nvrtc-check.py [--arch sm_80 --arch sm_90] [--lib PATH]

The library is looked for in --lib, $NVRTC_LIB, the running Python's
site-packages/nvidia/cuda_nvrtc/lib, then the system loader path. Exits 1 if any
file fails to compile.
"""

import argparse
import ctypes
import glob
import os
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels")


def load_nvrtc(explicit):
    candidates = []
    if explicit:
        candidates.append(explicit)
    if os.environ.get("NVRTC_LIB"):
        candidates.append(os.environ["NVRTC_LIB"])
    site = sysconfig.get_paths()["purelib"]
    candidates += sorted(glob.glob(os.path.join(site, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.*")))
    candidates += ["libnvrtc.so.12", "libnvrtc.so"]
    for c in candidates:
        try:
            return ctypes.CDLL(c), c
        except OSError:
            continue
    sys.exit("nvrtc-check: libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12, or --lib PATH)")


def check(nvrtc, rc, what):
    if rc != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"{what}: {nvrtc.nvrtcGetErrorString(rc).decode()}")


def compile_file(nvrtc, path, arch):
    """Returns (ok, log, cubin size)."""
    src = open(path, "rb").read()
    prog = ctypes.c_void_p()
    check(
        nvrtc,
        nvrtc.nvrtcCreateProgram(
            ctypes.byref(prog), src, os.path.basename(path).encode(), 0, None, None
        ),
        "nvrtcCreateProgram",
    )
    opts = [
        f"--gpu-architecture={arch}",
        f"--include-path={KERNELS}",
        "--std=c++17",
        "--ptxas-options=-v",
    ]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, buf)
    log = buf.value.decode(errors="replace")
    cubin = 0
    if rc == 0:
        csize = ctypes.c_size_t()
        check(nvrtc, nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(csize)), "nvrtcGetCUBINSize")
        cubin = csize.value
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, log, cubin


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", help="sm_XX (repeatable; default sm_80 and sm_90)")
    ap.add_argument("--lib", help="path of libnvrtc.so")
    ap.add_argument("files", nargs="*", help="kernel files (default kernels/*.cu)")
    a = ap.parse_args()
    nvrtc, lib = load_nvrtc(a.lib)
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC {major.value}.{minor.value} ({lib})")
    files = a.files or sorted(glob.glob(os.path.join(KERNELS, "*.cu")))
    failed = 0
    for arch in a.arch or ["sm_80", "sm_90"]:
        for f in files:
            ok, log, cubin = compile_file(nvrtc, f, arch)
            status = f"ok, cubin {cubin} bytes" if ok else "FAILED"
            print(f"== {arch} {os.path.relpath(f, ROOT)}: {status}")
            if log.strip():
                print(log.rstrip())
            failed += not ok
    if failed:
        print(f"nvrtc-check: {failed} compilation(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
