// Helpers of the affine-quantized matrix-vector kernel
// (quantized_matvec.cu). MLX's custom-kernel builder puts this text before
// the kernel, after MLX's own device headers (which bring cuda_bf16.h and
// cuda_fp16.h).

__device__ __forceinline__ float qmv_to_float(float v) { return v; }
__device__ __forceinline__ float qmv_to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float qmv_to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

__device__ __forceinline__ void qmv_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void qmv_store(__half* p, float v) {
  *p = __float2half_rn(v);
}
__device__ __forceinline__ void qmv_store(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

// v rounded to T's precision, as a float.
template <typename T>
__device__ __forceinline__ float qmv_round(float v) {
  T t;
  qmv_store(&t, v);
  return qmv_to_float(t);
}
// Four half-precision values (8 bytes) as floats.
__device__ __forceinline__ void qmv_load4(const __nv_bfloat16* p, float* v) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  v[0] = __uint_as_float(u.x << 16);
  v[1] = __uint_as_float(u.x & 0xffff0000u);
  v[2] = __uint_as_float(u.y << 16);
  v[3] = __uint_as_float(u.y & 0xffff0000u);
}

__device__ __forceinline__ void qmv_load4(const __half* p, float* v) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&u);
  const float2 a = __half22float2(h[0]);
  const float2 b = __half22float2(h[1]);
  v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
}

__device__ __forceinline__ void qmv_load4(const float* p, float* v) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
}

// The 8 values at p (16-byte aligned) as floats: one 16-byte load.
__device__ __forceinline__ void qmv_load8(const __nv_bfloat16* p, float* v) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t a[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    // Little-endian: the first of the pair is the low half. A bfloat16 is
    // the high half of the float with the same value.
    v[2 * i] = __uint_as_float(a[i] << 16);
    v[2 * i + 1] = __uint_as_float(a[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ void qmv_load8(const __half* p, float* v) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

// The 8 values at p (32-byte aligned): two 16-byte loads.
__device__ __forceinline__ void qmv_load8(const float* p, float* v) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

// The 8 four-bit elements of a packed word (element k in bits 4k..4k+3, as
// MLX packs them), each as the float 128 + q: the low and the high nibbles
// of the 4 bytes are masked apart, and a byte permute puts one nibble's
// byte under the exponent byte 0x43 of 128.0f (0x43000000), whose mantissa
// step there is 1. Exact; 11 integer operations per word.
__device__ __forceinline__ void qmv_unpack4(uint32_t q, float* f) {
  const uint32_t lo = q & 0x0f0f0f0fu;
  const uint32_t hi = (q >> 4) & 0x0f0f0f0fu;
  f[0] = __uint_as_float(__byte_perm(lo, 0x4300u, 0x5044u));
  f[1] = __uint_as_float(__byte_perm(hi, 0x4300u, 0x5044u));
  f[2] = __uint_as_float(__byte_perm(lo, 0x4300u, 0x5144u));
  f[3] = __uint_as_float(__byte_perm(hi, 0x4300u, 0x5144u));
  f[4] = __uint_as_float(__byte_perm(lo, 0x4300u, 0x5244u));
  f[5] = __uint_as_float(__byte_perm(hi, 0x4300u, 0x5244u));
  f[6] = __uint_as_float(__byte_perm(lo, 0x4300u, 0x5344u));
  f[7] = __uint_as_float(__byte_perm(hi, 0x4300u, 0x5344u));
}

// The 4 eight-bit elements of a packed word (element k in byte k), each
// exactly as a float: a byte permute puts it under 2^23's exponent (0x4b,
// mantissa step 1), and 2^23 is taken off again.
__device__ __forceinline__ void qmv_unpack8(uint32_t q, float* f) {
  f[0] = __uint_as_float(__byte_perm(q, 0x4b000000u, 0x7540u)) - 8388608.0f;
  f[1] = __uint_as_float(__byte_perm(q, 0x4b000000u, 0x7541u)) - 8388608.0f;
  f[2] = __uint_as_float(__byte_perm(q, 0x4b000000u, 0x7542u)) - 8388608.0f;
  f[3] = __uint_as_float(__byte_perm(q, 0x4b000000u, 0x7543u)) - 8388608.0f;
}

// The N (4 or 8) values at p as floats, in one load (p aligned to it).
template <int N, typename T>
__device__ __forceinline__ void qmv_load(const T* p, float* v) {
  if constexpr (N == 8) {
    qmv_load8(p, v);
  } else {
    qmv_load4(p, v);
  }
}

// A word's elements at BITS (4 or 8) bits: see qmv_unpack4 and qmv_unpack8.
template <int BITS>
__device__ __forceinline__ void qmv_unpack(uint32_t q, float* f) {
  if constexpr (BITS == 4) {
    qmv_unpack4(q, f);
  } else {
    qmv_unpack8(q, f);
  }
}
