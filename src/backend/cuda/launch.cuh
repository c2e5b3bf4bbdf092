// Kernel launches with programmatic dependent launch (PDL, sm_90): a kernel may be scheduled
// while the one before it in the stream still runs, so its launch and, for the GEMVs, its first
// weight loads overlap the previous kernel's tail instead of following it. The rule that keeps
// this safe, for every kernel of this folder:
//   - it is launched through launch() below;
//   - it calls dependency_wait() before its first access to memory that an earlier kernel of
//     its step may write or read. Every step begins with a copy of its metadata (begin_batch),
//     which waits for every kernel of the steps before; so what no kernel of the step writes
//     before this one may be read before the wait: the weights (GEMVs, norms), a call's
//     metadata, the delta rule's recurrent state (only its decode kernel writes it, once a
//     step), and the KV rows of the positions before the call's (decode attention);
//     pdl_enter() at the top of a kernel is the plain form of that.
// Without the attribute (KEEL_CUDA_PDL=0, KEEL_PROFILE) launches are ordinary and the
// instructions below do nothing. cuBLAS's kernels never release early, so what follows them
// waits for their end as before.
// What the waits still cost a decode step, the ceiling of any scheme that overlaps them further
// (a persistent decode kernel, say): with dependency_wait() compiled to nothing (wrong results,
// timing only) Qwen3-8B Q8_0 decoded at depth 0 / 4096 / 32768 327.6 / 293.0 / 212.3 and 328.0 /
// 294.7 / 212.6 tok/s against main's 299.8 / 267.0 / 193.8 and 299.6 / 266.7 / 194.0 (keel bench
// -r 2, in turn; H100), +9.4 / +10.1 / +9.6% on the means; with KEEL_CUDA_PDL=0 261.6 / 238.5 / 179.7.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace keel::cuda {

// Waits until every kernel this one depends on has finished and its writes are visible.
__device__ __forceinline__ void dependency_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
// Lets the next kernel be scheduled once every CTA of this one has run this (or exited).
__device__ __forceinline__ void release_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::); }
// The top of a kernel: let the next kernel be scheduled (it too waits before touching anything),
// then wait for this one's inputs. Kernels are thus queued on the GPU ahead of their inputs, so
// each starts the moment the one before ends; the running kernel is always fully resident
// (a kernel releases only once all its CTAs run), so the ones waiting cannot starve it.
__device__ __forceinline__ void pdl_enter() {
  release_dependents();
  dependency_wait();
}

// Whether launches carry the PDL attribute: not under KEEL_CUDA_PDL=0 or KEEL_PROFILE (whose
// events time each op alone). Read once.
bool pdl_enabled();

// Whether this process's GPU runs the sm_90a kernels (wgmma.cuh): compute capability 9.0, unless
// turned off with KEEL_CUDA_WGMMA=0 (to compare with the kernels they replace). Read once.
bool wgmma_available();

template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = pdl_enabled() ? 1 : 0;
  check(cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...), "kernel launch");
}

}  // namespace keel::cuda
