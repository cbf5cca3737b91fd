// y = x W^T for a 4-bit affine-quantized W (MLX's layout: w uint32
// [N, K/8], scales and biases [N, K/GROUP]) and a few rows of x (M <= 4):
// the decode step's matrix-vector products. The body of an MLX CUDA custom
// kernel; MLX writes the signature:
//   x [M, K] (T), w [N, K/8] (uint32), scales, biases [N, K/GROUP] (T)
//   -> out [M, N] (T)
// and the compile-time constants T, K, N, GROUP, ROWS, M, UNROLL.
//
// One warp computes ROWS rows of W. Lane l reads the packed words l, l+32,
// l+64, ... of each row (each warp-wide load is 128 contiguous bytes), and
// the 8 elements of x each word covers (one 16-byte load, also contiguous
// across the warp). UNROLL words per lane and row are loaded before any is
// used, so that enough bytes are in flight to keep memory busy.
//
// Per word: d = sum_k x_k (128 + q_k) (qmv_unpack4), xs = sum_k x_k, and
// the row's sum gains s d + (b - 128 s) xs = sum_k x_k (s q_k + b), in
// float. Then the lanes' sums are added with shuffles.
constexpr int WORDS = K / 8;
constexpr int GROUPS = K / GROUP;
// When the words divide into whole rounds and the rows into whole warps,
// no bounds checks are needed (the common case: the caller picks UNROLL).
constexpr bool WHOLE_ROUNDS = WORDS % (32 * UNROLL) == 0;
constexpr bool WHOLE_ROWS = N % ROWS == 0;
const int lane = threadIdx.x;
const int warp = blockIdx.y * blockDim.y + threadIdx.y;
const int row0 = warp * ROWS;
if (row0 >= N) {
  return;
}

float acc[M][ROWS];
#pragma unroll
for (int m = 0; m < M; ++m) {
#pragma unroll
  for (int j = 0; j < ROWS; ++j) {
    acc[m][j] = 0.0f;
  }
}

for (int base = lane; base < WORDS; base += 32 * UNROLL) {
  uint32_t q[UNROLL][ROWS];
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    const int i = base + 32 * u;
#pragma unroll
    for (int j = 0; j < ROWS; ++j) {
      const int row = row0 + j;
      q[u][j] = ((WHOLE_ROUNDS || i < WORDS) && (WHOLE_ROWS || row < N))
          ? w[(size_t)row * WORDS + i]
          : 0u;
    }
  }
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    const int i = base + 32 * u;
    if (WHOLE_ROUNDS || i < WORDS) {
      float xv[M][8];
      float xs[M];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        qmv_load8(x + (size_t)m * K + 8 * i, xv[m]);
        xs[m] = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          xs[m] += xv[m][k];
        }
      }
      const int g = (8 * i) / GROUP;
#pragma unroll
      for (int j = 0; j < ROWS; ++j) {
        const int row = row0 + j;
        if (WHOLE_ROWS || row < N) {
          const float s = qmv_to_float(scales[(size_t)row * GROUPS + g]);
          const float b =
              qmv_to_float(biases[(size_t)row * GROUPS + g]) - 128.0f * s;
          float f[8];
          qmv_unpack4(q[u][j], f);
#pragma unroll
          for (int m = 0; m < M; ++m) {
            float d = 0.0f;
#pragma unroll
            for (int k = 0; k < 8; ++k) {
              d = fmaf(xv[m][k], f[k], d);
            }
            acc[m][j] = fmaf(s, d, fmaf(b, xs[m], acc[m][j]));
          }
        }
      }
    }
  }
}

#pragma unroll
for (int m = 0; m < M; ++m) {
#pragma unroll
  for (int j = 0; j < ROWS; ++j) {
    float v = acc[m][j];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    const int row = row0 + j;
    if (lane == 0 && row < N) {
      qmv_store(out + (size_t)m * N + row, v);
    }
  }
}
