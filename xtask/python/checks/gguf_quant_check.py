"""Check gguf-py's dequantization against a plain transcription of ggml's C.

Usage:
    python -m checks.gguf_quant_check GGUF [GGUF ...] [--blocks 64]

gguf_to_hf.py (and so every GGUF reference) trusts `gguf.quants.dequantize`,
which is vectorized numpy. This script re-does the dequantization block by
block, element by element, following ggml's `dequantize_row_*`
(ggml-quants.c) line by line with float32 arithmetic in C's order, for
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, on `--blocks`
blocks of every quantized tensor (first, last, and evenly spaced between),
and reports the largest difference per type. Expected: 0.
"""

from __future__ import annotations

import argparse
import struct
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

from common import gguf_to_hf

F = np.float32


def f16(b: bytes, at: int) -> np.float32:
    return F(np.frombuffer(b, dtype="<f2", count=1, offset=at)[0])


def q4_0(b: bytes) -> list:
    d = f16(b, 0)
    qs = b[2:18]
    y = [F(0)] * 32
    for j in range(16):
        y[j] = F((qs[j] & 0x0F) - 8) * d
        y[j + 16] = F((qs[j] >> 4) - 8) * d
    return y


def q4_1(b: bytes) -> list:
    d, m = f16(b, 0), f16(b, 2)
    qs = b[4:20]
    y = [F(0)] * 32
    for j in range(16):
        y[j] = F(qs[j] & 0x0F) * d + m
        y[j + 16] = F(qs[j] >> 4) * d + m
    return y


def q5_0(b: bytes) -> list:
    d = f16(b, 0)
    (qh,) = struct.unpack_from("<I", b, 2)
    qs = b[6:22]
    y = [F(0)] * 32
    for j in range(16):
        xh_0 = ((qh >> j) << 4) & 0x10
        xh_1 = (qh >> (j + 12)) & 0x10
        y[j] = F(((qs[j] & 0x0F) | xh_0) - 16) * d
        y[j + 16] = F(((qs[j] >> 4) | xh_1) - 16) * d
    return y


def q5_1(b: bytes) -> list:
    d, m = f16(b, 0), f16(b, 2)
    (qh,) = struct.unpack_from("<I", b, 4)
    qs = b[8:24]
    y = [F(0)] * 32
    for j in range(16):
        xh_0 = ((qh >> j) << 4) & 0x10
        xh_1 = (qh >> (j + 12)) & 0x10
        y[j] = F((qs[j] & 0x0F) | xh_0) * d + m
        y[j + 16] = F((qs[j] >> 4) | xh_1) * d + m
    return y


def q8_0(b: bytes) -> list:
    d = f16(b, 0)
    qs = np.frombuffer(b, dtype=np.int8, count=32, offset=2)
    return [F(int(q)) * d for q in qs]


def q2_k(b: bytes) -> list:
    scales, qs = b[0:16], b[16:80]
    d, dmin = f16(b, 80), f16(b, 82)
    y, is_, q = [], 0, 0
    for _n in range(0, 256, 128):
        shift = 0
        for _j in range(4):
            for off in (0, 16):
                sc = scales[is_]
                is_ += 1
                dl, ml = d * F(sc & 0xF), dmin * F(sc >> 4)
                for l in range(16):
                    y.append(dl * F((qs[q + l + off] >> shift) & 3) - ml)
            shift += 2
        q += 32
    return y


def q3_k(b: bytes) -> list:
    hm, qs, raw_scales = b[0:32], b[32:96], b[96:108]
    d_all = f16(b, 108)
    aux = list(struct.unpack("<3I", raw_scales)) + [0]
    kmask1, kmask2 = 0x03030303, 0x0F0F0F0F
    tmp = aux[2]
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4)
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4)
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4)
    scales = np.frombuffer(struct.pack("<4I", *[a & 0xFFFFFFFF for a in aux]), dtype=np.int8)
    y, is_, q, m = [], 0, 0, 1
    for _n in range(0, 256, 128):
        shift = 0
        for _j in range(4):
            for off in (0, 16):
                dl = d_all * F(int(scales[is_]) - 32)
                is_ += 1
                for l in range(16):
                    v = ((qs[q + l + off] >> shift) & 3) - (0 if hm[l + off] & m else 4)
                    y.append(dl * F(v))
            shift += 2
            m <<= 1
        q += 32
    return y


def scale_min_k4(j: int, s: bytes) -> tuple[int, int]:
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    return (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)


def q4_k(b: bytes) -> list:
    d, dmin = f16(b, 0), f16(b, 2)
    scales, qs = b[4:16], b[16:144]
    y, is_, q = [], 0, 0
    for _j in range(0, 256, 64):
        sc, m = scale_min_k4(is_, scales)
        d1, m1 = d * F(sc), dmin * F(m)
        sc, m = scale_min_k4(is_ + 1, scales)
        d2, m2 = d * F(sc), dmin * F(m)
        y += [d1 * F(qs[q + l] & 0xF) - m1 for l in range(32)]
        y += [d2 * F(qs[q + l] >> 4) - m2 for l in range(32)]
        q += 32
        is_ += 2
    return y


def q5_k(b: bytes) -> list:
    d, dmin = f16(b, 0), f16(b, 2)
    scales, qh, ql = b[4:16], b[16:48], b[48:176]
    y, is_, q, u1, u2 = [], 0, 0, 1, 2
    for _j in range(0, 256, 64):
        sc, m = scale_min_k4(is_, scales)
        d1, m1 = d * F(sc), dmin * F(m)
        sc, m = scale_min_k4(is_ + 1, scales)
        d2, m2 = d * F(sc), dmin * F(m)
        y += [d1 * F((ql[q + l] & 0xF) + (16 if qh[l] & u1 else 0)) - m1 for l in range(32)]
        y += [d2 * F((ql[q + l] >> 4) + (16 if qh[l] & u2 else 0)) - m2 for l in range(32)]
        q += 32
        is_ += 2
        u1 <<= 2
        u2 <<= 2
    return y


def q6_k(b: bytes) -> list:
    ql, qh = b[0:128], b[128:192]
    sc = np.frombuffer(b, dtype=np.int8, count=16, offset=192)
    d = f16(b, 208)
    y = [F(0)] * 256
    for half in range(2):
        o, lo, ho, so = 128 * half, 64 * half, 32 * half, 8 * half
        for l in range(32):
            is_ = l // 16
            q1 = ((ql[lo + l] & 0xF) | (((qh[ho + l] >> 0) & 3) << 4)) - 32
            q2 = ((ql[lo + l + 32] & 0xF) | (((qh[ho + l] >> 2) & 3) << 4)) - 32
            q3 = ((ql[lo + l] >> 4) | (((qh[ho + l] >> 4) & 3) << 4)) - 32
            q4 = ((ql[lo + l + 32] >> 4) | (((qh[ho + l] >> 6) & 3) << 4)) - 32
            y[o + l] = d * F(int(sc[so + is_])) * F(q1)
            y[o + l + 32] = d * F(int(sc[so + is_ + 2])) * F(q2)
            y[o + l + 64] = d * F(int(sc[so + is_ + 4])) * F(q3)
            y[o + l + 96] = d * F(int(sc[so + is_ + 6])) * F(q4)
    return y


PORTS = {QT.Q4_0: q4_0, QT.Q4_1: q4_1, QT.Q5_0: q5_0, QT.Q5_1: q5_1, QT.Q8_0: q8_0,
         QT.Q2_K: q2_k, QT.Q3_K: q3_k, QT.Q4_K: q4_k, QT.Q5_K: q5_k, QT.Q6_K: q6_k}


def check_file(path: str, n_blocks: int, worst: dict) -> None:
    g = gguf_to_hf.GgufFile(path)
    for t in g.tensors:
        port = PORTS.get(t.qtype)
        if port is None:
            continue
        block, size = gguf.GGML_QUANT_SIZES[t.qtype]
        raw = np.ascontiguousarray(t.data).reshape(-1, size)
        picks = np.unique(np.linspace(0, len(raw) - 1, min(n_blocks, len(raw))).round().astype(int))
        ref = gguf.quants.dequantize(raw[picks], t.qtype).reshape(len(picks), block)
        for row, i in zip(ref, picks):
            mine = np.array(port(raw[i].tobytes()), dtype=np.float32)
            diff = float(np.abs(mine - row).max())
            name, (w, count) = t.qtype.name, worst.get(t.qtype.name, (0.0, 0))
            worst[name] = (max(w, diff), count + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", nargs="+")
    ap.add_argument("--blocks", type=int, default=64, help="blocks checked per tensor")
    args = ap.parse_args()
    worst: dict = {}
    for path in args.gguf:
        check_file(path, args.blocks, worst)
    bad = False
    for name in sorted(worst):
        diff, count = worst[name]
        bad |= diff != 0.0
        print(f"{name:5} {count:6d} blocks: max |ggml port - gguf-py| = {diff:.3g}")
    if not worst:
        print("no quantized tensors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
