#include "backend/cuda/step_graphs.h"

#include "backend/cuda/cuda_check.h"
#include "keel/error.h"

namespace keel::cuda {

StepGraphs::StepGraphs(bool enabled) : enabled_(enabled) { entries_.reserve(kMaxGraphs); }

StepGraphs::~StepGraphs() {
  for (Entry& e : entries_)
    if (e.exec) cudaGraphExecDestroy(e.exec);
}

StepGraphs::Entry* StepGraphs::find(uint64_t key) {
  for (Entry& e : entries_)
    if (e.key == key && e.exec) return &e;
  return nullptr;
}

StepGraphs::Entry& StepGraphs::slot_for(uint64_t key) {
  Entry* victim = nullptr;
  for (Entry& e : entries_)
    if (e.key == key) victim = &e;
  if (!victim && entries_.size() < kMaxGraphs) victim = &entries_.emplace_back();
  if (!victim) {
    victim = &entries_[0];
    for (Entry& e : entries_)
      if (e.last_used < victim->last_used) victim = &e;
  }
  if (victim->exec) check(cudaGraphExecDestroy(victim->exec), "cudaGraphExecDestroy");
  *victim = Entry{};
  victim->key = key;
  return *victim;
}

void StepGraphs::begin_step(uint64_t key, cudaStream_t stream) {
  if (mode_ != Mode::eager) throw Error("internal: a CUDA step began before the previous one finished");
  ops_hash_ = 0;
  current_ = nullptr;
  step_key_ = key;
  if (!enabled_ || key == 0) {
    seen_key_ = 0;
    return;
  }
  if (Entry* e = find(key)) {
    current_ = e;
    e->last_used = ++clock_;
    mode_ = Mode::replay;
  } else if (key == seen_key_) {
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    mode_ = Mode::capture;
  }
  seen_key_ = key;
}

bool StepGraphs::skip(uint64_t op_hash) {
  if (mode_ == Mode::eager) return false;
  ops_hash_ = hash_mix(ops_hash_, op_hash);
  return mode_ == Mode::replay;
}

void StepGraphs::finish(cudaStream_t stream) {
  if (mode_ == Mode::capture) {
    mode_ = Mode::eager;
    cudaGraph_t graph = nullptr;
    check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    Entry& e = slot_for(step_key_);
    const cudaError_t made = cudaGraphInstantiate(&e.exec, graph, 0);
    cudaGraphDestroy(graph);
    check(made, "cudaGraphInstantiate");
    e.ops_hash = ops_hash_;
    e.last_used = ++clock_;
    ++captures_;
    check(cudaGraphLaunch(e.exec, stream), "cudaGraphLaunch");
  } else if (mode_ == Mode::replay) {
    mode_ = Mode::eager;
    if (ops_hash_ != current_->ops_hash)
      throw Error("internal: a decode step's operations differ from its CUDA graph's; "
                  "KEEL_CUDA_GRAPHS=0 runs without graphs");
    ++replays_;
    check(cudaGraphLaunch(current_->exec, stream), "cudaGraphLaunch");
  }
}

void StepGraphs::abandon(cudaStream_t stream) {
  if (mode_ == Mode::capture) {
    cudaGraph_t graph = nullptr;
    check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    if (graph) cudaGraphDestroy(graph);
  }
  mode_ = Mode::eager;
  seen_key_ = 0;
}

}  // namespace keel::cuda
