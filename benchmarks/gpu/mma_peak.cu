// Peak throughput of the warp-level tensor-core instructions llama.cpp's CUDA kernels use (mma.sync):
// int8 m16n8k32 (MMQ: quantised weights x int8 activations) and f16 m16n8k16 with f32 accumulation
// (MMF / Marlin-style W4A16). Datasheet peaks of Hopper assume wgmma, which llama.cpp does not use, so the
// speed model scales llama.cpp compute by this measured figure rather than by the datasheet.
// Build: nvcc -O3 -arch=sm_90 mma_peak.cu -o mma_peak ; prints one JSON line.
#include <cstdio>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

constexpr int CHAINS = 8;

__global__ void mma_s8(int iters, int *out) {
  unsigned a[4] = {threadIdx.x, threadIdx.x * 3u, 7u, 11u}, b[2] = {threadIdx.x * 5u, 13u};
  int c[CHAINS][4] = {};
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int k = 0; k < CHAINS; ++k)
      asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                   "{%0,%1,%2,%3};\n"
                   : "+r"(c[k][0]), "+r"(c[k][1]), "+r"(c[k][2]), "+r"(c[k][3])
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  int s = 0;
  for (int k = 0; k < CHAINS; ++k) s += c[k][0] + c[k][1] + c[k][2] + c[k][3];
  if (s == 0x7fffffff) out[0] = s;  // keep the work alive
}

__global__ void mma_f16(int iters, float *out) {
  unsigned a[4] = {0x3c003c00u, 0x3c003c00u, 0x3c003c00u, 0x3c003c00u}, b[2] = {0x3c003c00u, 0x3c003c00u};
  float c[CHAINS][4] = {};
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int k = 0; k < CHAINS; ++k)
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                   "{%0,%1,%2,%3};\n"
                   : "+f"(c[k][0]), "+f"(c[k][1]), "+f"(c[k][2]), "+f"(c[k][3])
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  float s = 0;
  for (int k = 0; k < CHAINS; ++k) s += c[k][0] + c[k][1] + c[k][2] + c[k][3];
  if (s == -1.0f) out[0] = s;
}

template <typename K, typename T>
static int run(const char *name, K kernel, T *buf, double ops_per_mma, int sms) {
  const int threads = 256, blocks = sms * 8, iters = 4096;
  cudaEvent_t t0, t1;
  CHECK(cudaEventCreate(&t0));
  CHECK(cudaEventCreate(&t1));
  kernel<<<blocks, threads>>>(64, buf);  // warm-up
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  float best = 1e30f;
  for (int r = 0; r < 5; ++r) {
    CHECK(cudaEventRecord(t0));
    kernel<<<blocks, threads>>>(iters, buf);
    CHECK(cudaEventRecord(t1));
    CHECK(cudaEventSynchronize(t1));
    CHECK(cudaGetLastError());
    float ms;
    CHECK(cudaEventElapsedTime(&ms, t0, t1));
    if (ms < best) best = ms;
  }
  double warps = blocks * (threads / 32.0);
  double tops = warps * iters * CHAINS * ops_per_mma / (best * 1e-3) / 1e12;
  printf("\"%s_tops\": %.1f, ", name, tops);
  return 0;
}

int main() {
  cudaDeviceProp p;
  CHECK(cudaGetDeviceProperties(&p, 0));
  int *ibuf;
  float *fbuf;
  CHECK(cudaMalloc(&ibuf, 64));
  CHECK(cudaMalloc(&fbuf, 64));
  int clock_khz = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  printf("{\"device\": \"%s\", \"sms\": %d, \"clock_mhz\": %d, ", p.name, p.multiProcessorCount, clock_khz / 1000);
  if (run("mma_sync_int8", mma_s8, ibuf, 2.0 * 16 * 8 * 32, p.multiProcessorCount)) return 1;
  if (run("mma_sync_f16_f32acc", mma_f16, fbuf, 2.0 * 16 * 8 * 16, p.multiProcessorCount)) return 1;
  printf("\"source\": \"benchmarks/gpu/mma_peak.cu\"}\n");
  return 0;
}
