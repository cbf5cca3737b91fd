"""Counts the SASS instructions of our 4-bit matrix-vector kernel
(crates/mlx-rs-core/src/kernels/) for one set of its compile-time
constants, without a GPU: the body is wrapped as MLX's custom-kernel
builder wraps it, compiled with NVRTC to PTX, assembled with ptxas for
sm_90 and disassembled with cuobjdump. Prints ptxas's register count and
the instruction mix; divide by the bytes a loop round reads per lane for
instructions per byte (the number BENCHMARKS.md's section on the kernel's
second version compares).

Needs NVIDIA's pip wheels, in the Python that runs it:
    pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 \\
        nvidia-cuda-nvcc-cu12 nvidia-cuda-cuobjdump
Usage:
    PYTHONPATH=xtask/python python3 -m gpu.cuda_sass_count K=4096 N=28672 GROUP=64 ROWS=4 M=1 UNROLL=2 [T=__half]
"""

from __future__ import annotations

import collections
import ctypes
import glob
import os
import re
import subprocess
import sys
import sysconfig
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(HERE, "..", "..", "..", "crates", "mlx-rs-core", "src", "kernels")


def find(pattern: str) -> str:
    nvidia = os.path.join(sysconfig.get_paths()["purelib"], "nvidia")
    hits = sorted(glob.glob(os.path.join(nvidia, pattern)))
    if not hits:
        sys.exit(f"not found: {nvidia}/{pattern} (install NVIDIA's pip wheels, see the notes)")
    return hits[-1]


def main() -> None:
    consts = dict(a.split("=", 1) for a in sys.argv[1:])
    dtype = consts.pop("T", "__nv_bfloat16")
    src = "#include <cuda_bf16.h>\n#include <cuda_fp16.h>\ntypedef unsigned int uint32_t;\n"
    src += open(os.path.join(KERNELS, "quantized_matvec_header.cuh")).read()
    src += (f'\nextern "C" __global__ void qmv(const {dtype}* x, const uint32_t* w, '
            f"const {dtype}* scales, const {dtype}* biases, {dtype}* out) {{\n  using T = {dtype};\n")
    src += "".join(f"  constexpr int {k} = {v};\n" for k, v in consts.items())
    src += open(os.path.join(KERNELS, "quantized_matvec.cu")).read() + "\n}\n"
    nvrtc = ctypes.CDLL(find("cuda_nvrtc/lib/libnvrtc.so.*"))
    prog = ctypes.c_void_p()
    nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"qmv.cu", 0, None, None)
    opts = [b"--gpu-architecture=compute_90", b"--std=c++17", b"-default-device",
            b"-I" + find("cuda_runtime/include").encode()]
    status = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if log.value.strip():
        print(log.value.decode())
    if status != 0:
        sys.exit(f"NVRTC failed ({status})")
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin = os.path.join(tmp, "qmv.ptx"), os.path.join(tmp, "qmv.cubin")
        with open(ptx_path, "wb") as f:
            f.write(ptx.value)
        subprocess.run([find("cuda_nvcc/bin/ptxas"), "-arch=sm_90", "-v", "-O3", ptx_path, "-o", cubin],
                       check=True)
        sass = subprocess.run([find("*/bin/cuobjdump"), "-sass", cubin], capture_output=True,
                              text=True, check=True).stdout
    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m:
            ops[m.group(2).split(".")[0]] += 1
    print("instructions:", sum(ops.values()))
    print(dict(ops.most_common()))


if __name__ == "__main__":
    main()
