// y = x W^T for a 4- or 8-bit affine-quantized W (MLX's layout: w uint32
// [N, K * BITS / 32], scales and biases [N, K/GROUP]) and a few rows of x
// (M <= 4): the decode step's matrix-vector products. The body of an MLX
// CUDA custom kernel; MLX writes the signature:
//   x [M, K] (T), w [N, K * BITS / 32] (uint32), scales, biases [N, K/GROUP]
//   (T), residual [M, N] (T; read only with RESIDUAL) -> out [M, N] (T)
// and the compile-time constants T, BITS, K, N, GROUP, ROWS, M, UNROLL,
// SWIGLU, RESIDUAL.
//
// With RESIDUAL, out = residual + x W^T: the product is rounded to T, as
// its own output would be, then added as MLX's add rounds it (the decoder
// layer's residual connection, one operation fewer for the host).
//
// With SWIGLU, W stacks a gate matrix (rows 0..N/2) over an up matrix (rows
// N/2..N), out is [M, N/2], and out = silu(gate) * up: a warp computes ROWS
// rows of each, and lane 0 rounds gate and up to T, as their own products
// would be, then the sigmoid, silu and the product, as MLX's ops round
// each (its exp may differ from expf in the last bit before rounding).
//
// One warp computes ROWS rows of W. A row is read in chunks of 16 bytes (4
// packed words: 32 elements at 4 bits, 16 at 8, always inside one group
// since GROUP >= 32): lane l reads chunks l, l+32, l+64, ... of each row,
// so each warp-wide load is 512 contiguous bytes. UNROLL chunks per lane
// and row are loaded before any is used, to keep enough bytes in flight.
//
// The arithmetic bounds this kernel (one H200 streams 4-bit weights faster
// than it can unpack them), so unpacking is a few integer operations per
// word (qmv_unpack): 4-bit elements become the floats 128 + q, 8-bit ones
// q exactly. Per chunk the row's sum gains s d + (b - OFFSET s) xs =
// sum_k x_k (s q_k + b), with d = sum_k x_k (OFFSET + q_k) and xs = sum_k
// x_k, in float; then the lanes' sums are added with shuffles.
constexpr int PER_WORD = 32 / BITS;
constexpr int PER_CHUNK = 4 * PER_WORD;
constexpr float OFFSET = BITS == 4 ? 128.0f : 0.0f;
constexpr int CHUNKS = K / PER_CHUNK;
constexpr int GROUPS = K / GROUP;
constexpr bool WHOLE_ROUNDS = CHUNKS % (32 * UNROLL) == 0;
// Output rows, and W's rows a warp computes (ROWS, or ROWS of gate and
// ROWS of up).
constexpr int NO = SWIGLU ? N / 2 : N;
constexpr int RR = SWIGLU ? 2 * ROWS : ROWS;
constexpr bool WHOLE_ROWS = NO % ROWS == 0;
const int lane = threadIdx.x;
const int warp = blockIdx.y * blockDim.y + threadIdx.y;
const int row0 = warp * ROWS;
if (row0 >= NO) {
  return;
}
const uint4* w4 = reinterpret_cast<const uint4*>(w);
// W's row for the warp's j-th (j < RR), and whether it exists.
auto w_row = [&](int j) { return j < ROWS ? row0 + j : NO + row0 + (j - ROWS); };
auto live = [&](int j) { return WHOLE_ROWS || row0 + (j % ROWS) < NO; };

float acc[M][RR];
#pragma unroll
for (int m = 0; m < M; ++m) {
#pragma unroll
  for (int j = 0; j < RR; ++j) {
    acc[m][j] = 0.0f;
  }
}

for (int base = lane; base < CHUNKS; base += 32 * UNROLL) {
  uint4 q[UNROLL][RR];
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    const int c = base + 32 * u;
#pragma unroll
    for (int j = 0; j < RR; ++j) {
      q[u][j] = ((WHOLE_ROUNDS || c < CHUNKS) && live(j))
          ? w4[(size_t)w_row(j) * CHUNKS + c]
          : make_uint4(0u, 0u, 0u, 0u);
    }
  }
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    const int c = base + 32 * u;
    if (WHOLE_ROUNDS || c < CHUNKS) {
      const int g = (PER_CHUNK * c) / GROUP;
      float s[RR];
      float b[RR];
#pragma unroll
      for (int j = 0; j < RR; ++j) {
        const int row = live(j) ? w_row(j) : row0;
        s[j] = qmv_to_float(scales[(size_t)row * GROUPS + g]);
        b[j] = qmv_to_float(biases[(size_t)row * GROUPS + g]);
      }
      float d[M][RR];
      float xs[M];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        xs[m] = 0.0f;
#pragma unroll
        for (int j = 0; j < RR; ++j) {
          d[m][j] = 0.0f;
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float xv[M][PER_WORD];
#pragma unroll
        for (int m = 0; m < M; ++m) {
          qmv_load<PER_WORD>(x + (size_t)m * K + PER_CHUNK * c + PER_WORD * i, xv[m]);
#pragma unroll
          for (int k = 0; k < PER_WORD; ++k) {
            xs[m] += xv[m][k];
          }
        }
#pragma unroll
        for (int j = 0; j < RR; ++j) {
          const uint32_t word = i == 0 ? q[u][j].x
              : i == 1              ? q[u][j].y
              : i == 2              ? q[u][j].z
                                    : q[u][j].w;
          float f[PER_WORD];
          qmv_unpack<BITS>(word, f);
#pragma unroll
          for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int k = 0; k < PER_WORD; ++k) {
              d[m][j] = fmaf(xv[m][k], f[k], d[m][j]);
            }
          }
        }
      }
#pragma unroll
      for (int j = 0; j < RR; ++j) {
        const float bb = b[j] - OFFSET * s[j];
#pragma unroll
        for (int m = 0; m < M; ++m) {
          acc[m][j] = fmaf(s[j], d[m][j], fmaf(bb, xs[m], acc[m][j]));
        }
      }
    }
  }
}

#pragma unroll
for (int m = 0; m < M; ++m) {
  float v[RR];
#pragma unroll
  for (int j = 0; j < RR; ++j) {
    v[j] = acc[m][j];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      v[j] += __shfl_xor_sync(0xffffffffu, v[j], offset);
    }
  }
#pragma unroll
  for (int j = 0; j < ROWS; ++j) {
    const int row = row0 + j;
    if (lane == 0 && row < NO) {
      if (SWIGLU) {
        const float gate = qmv_round<T>(v[j]);
        const float up = qmv_round<T>(v[SWIGLU ? j + ROWS : j]);
        const float sig = qmv_round<T>(1.0f / (1.0f + expf(-gate)));
        const float silu = qmv_round<T>(gate * sig);
        qmv_store(out + (size_t)m * NO + row, silu * up);
      } else if (RESIDUAL) {
        const float y = qmv_round<T>(v[j]);
        qmv_store(out + (size_t)m * NO + row,
                  y + qmv_to_float(residual[(size_t)m * NO + row]));
      } else {
        qmv_store(out + (size_t)m * NO + row, v[j]);
      }
    }
  }
}
