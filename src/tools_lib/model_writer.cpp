#include "tools_lib/model_writer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <future>
#include <map>
#include <mutex>

#include "backend/cpu/thread_pool.h"
#include "keel/error.h"
#include "quant/quantize.h"
#include "tools_lib/interrupt.h"

namespace keel::tools {
namespace {

constexpr uint64_t kBatchBytes = uint64_t{2} << 20;  // output bytes per batch (two in memory)
constexpr uint64_t kChunkBytes = uint64_t{64} << 10;  // output bytes a thread claims at a time

class ProgressBar {
 public:
  ProgressBar(bool enabled, uint64_t total) : enabled_(enabled && ::isatty(2)), total_(total) {}
  ~ProgressBar() {
    if (enabled_ && shown_) std::fprintf(stderr, "\r\033[K");
  }
  void update(uint64_t done, const std::string& name) {
    if (!enabled_ || total_ == 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (shown_ && now - last_ < std::chrono::milliseconds(100) && done < total_) return;
    last_ = now;
    shown_ = true;
    const int width = 30;
    const int filled = static_cast<int>(width * static_cast<double>(done) / total_);
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r\033[K[%s] %5.1f%%  %s", bar.c_str(), 100.0 * done / total_, name.c_str());
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  uint64_t total_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_;
};

void check_job(const TensorJob& job) {
  const gguf::TensorRecord& r = job.record;
  if (job.raw == nullptr && !job.encoded_rows && !job.rows)
    throw Error("internal error: tensor '" + r.name + "' has neither data nor a row source");
  if (job.raw == nullptr && !job.encoded_rows && !quant::can_quantize_to(r.type))
    throw Error("tensor '" + r.name + "': keel cannot write type " + std::string(quant::type_name(r.type)));
}

// Rows [row0, row0 + n) of a generated tensor into out, on every thread of the pool. Threads
// claim chunks of rows from a counter, so one slowed down by other work on the machine holds up
// no more than a chunk. Rows depend only on their index: the bytes do not depend on the threads.
void produce_rows(cpu::ThreadPool& pool, const TensorJob& job, uint64_t row0, uint64_t n, uint8_t* out,
                  std::vector<std::vector<float>>& row_buffers) {
  const gguf::TensorRecord& r = job.record;
  const uint64_t rb = r.row_bytes();
  const uint64_t chunk = std::max<uint64_t>(1, kChunkBytes / rb);
  std::atomic<uint64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  pool.run([&](int ith, int) {
    try {
      float* x = row_buffers[ith].data();
      for (uint64_t begin = next.fetch_add(chunk); begin < n; begin = next.fetch_add(chunk)) {
        if (interrupted()) return;
        for (uint64_t i = begin; i < std::min(n, begin + chunk); ++i) {
          uint8_t* row = out + i * rb;
          if (job.encoded_rows) {
            job.encoded_rows(row0 + i, row);
          } else {
            job.rows(row0 + i, x);
            quant::quantize_row(r.type, x, row, static_cast<int64_t>(r.shape[0]));
          }
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

// The writer's system calls on a second thread, one batch at a time, while the pool produces
// the next batch into the other of two buffers: the kernel's copy into the page cache (about
// 1 GB/s on one core) overlaps the generation instead of following it. Writes stay in order.
class BackgroundWrites {
 public:
  explicit BackgroundWrites(gguf::Writer& writer) : writer_(writer) {}
  ~BackgroundWrites() {  // an exception unwinds past a running write: let it end before the buffers go
    if (pending_.valid()) pending_.wait();
  }
  BackgroundWrites(const BackgroundWrites&) = delete;
  BackgroundWrites& operator=(const BackgroundWrites&) = delete;

  // A buffer of `bytes` that no write in flight reads.
  uint8_t* free_buffer(size_t bytes) {
    std::vector<uint8_t>& b = buffers_[next_];
    next_ ^= 1;
    if (b.size() < bytes) b.resize(bytes);
    return b.data();
  }
  // Queues data[0..n) (which must stay valid until the next write() or finish()) after the
  // previous write, whose error, if any, is thrown here.
  void write(const uint8_t* data, size_t n) {
    finish();
    pending_ = std::async(std::launch::async, [this, data, n] { writer_.write(data, n); });
  }
  void finish() {
    if (pending_.valid()) pending_.get();
  }

 private:
  gguf::Writer& writer_;
  std::vector<uint8_t> buffers_[2];
  int next_ = 0;
  std::future<void> pending_;  // destroyed first: waits for the write before the buffers go
};

}  // namespace

std::vector<gguf::TensorRecord> records_of(const std::vector<TensorJob>& jobs) {
  std::vector<gguf::TensorRecord> out;
  out.reserve(jobs.size());
  for (const TensorJob& j : jobs) out.push_back(j.record);
  return out;
}

WriteSummary summarize(const gguf::Metadata& metadata, const std::vector<TensorJob>& jobs) {
  const std::vector<gguf::TensorRecord> records = records_of(jobs);
  const gguf::Layout layout = gguf::plan_layout(metadata, records);
  WriteSummary s;
  s.file_bytes = layout.file_bytes();
  for (const auto& r : records) {
    s.tensor_bytes += r.n_bytes();
    s.n_elements += r.n_rows() * r.shape[0];
  }
  return s;
}

std::string format_bytes(uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f GB (%.2f GiB)", bytes / 1e9, bytes / 1073741824.0);
  if (bytes < 100'000'000) std::snprintf(buf, sizeof buf, "%.2f MB (%.2f MiB)", bytes / 1e6, bytes / 1048576.0);
  return buf;
}

void print_tensor_table(std::FILE* out, const gguf::Metadata& metadata, const std::vector<TensorJob>& jobs) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_type;  // type -> (count, bytes)
  for (const TensorJob& j : jobs) {
    const auto& r = j.record;
    std::string shape = "[";
    for (size_t i = 0; i < r.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(r.shape[i]);
    shape += "]";
    std::fprintf(out, "  %-36s %-6s %-20s %14llu bytes%s%s\n", r.name.c_str(),
                 std::string(quant::type_name(r.type)).c_str(), shape.c_str(),
                 static_cast<unsigned long long>(r.n_bytes()), j.note.empty() ? "" : "  ", j.note.c_str());
    auto& t = by_type[std::string(quant::type_name(r.type))];
    t.first += 1;
    t.second += r.n_bytes();
  }
  const WriteSummary s = summarize(metadata, jobs);
  std::fprintf(out, "\nby type:\n");
  for (const auto& [name, cb] : by_type)
    std::fprintf(out, "  %-6s %5llu tensors %16llu bytes\n", name.c_str(), static_cast<unsigned long long>(cb.first),
                 static_cast<unsigned long long>(cb.second));
  std::fprintf(out, "tensors: %zu, %llu weights, tensor data %llu bytes = %s, %.3f bits per weight\n", jobs.size(),
               static_cast<unsigned long long>(s.n_elements), static_cast<unsigned long long>(s.tensor_bytes),
               format_bytes(s.tensor_bytes).c_str(), s.bits_per_weight());
  std::fprintf(out, "file: %llu bytes = %s\n", static_cast<unsigned long long>(s.file_bytes),
               format_bytes(s.file_bytes).c_str());
}

WriteSummary write_model(const std::string& path, const gguf::Metadata& metadata, const std::vector<TensorJob>& jobs,
                         const WriteOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  for (const TensorJob& j : jobs) check_job(j);
  InterruptScope interrupt;
  gguf::Writer writer(path, metadata, records_of(jobs));
  interrupt.set_cleanup_path(writer.temp_path());
  cpu::ThreadPool pool(options.n_threads);
  WriteSummary summary = summarize(metadata, jobs);
  ProgressBar progress(options.progress, summary.tensor_bytes);

  uint64_t max_ne0 = 1;
  for (const TensorJob& j : jobs) max_ne0 = std::max(max_ne0, j.record.shape[0]);
  std::vector<std::vector<float>> row_buffers(pool.size(), std::vector<float>(max_ne0));
  BackgroundWrites writes(writer);
  uint64_t done = 0;

  for (const TensorJob& job : jobs) {
    const gguf::TensorRecord& r = job.record;
    throw_if_interrupted();
    if (job.raw) {
      for (uint64_t off = 0; off < r.n_bytes(); off += kBatchBytes) {
        const uint64_t n = std::min(kBatchBytes, r.n_bytes() - off);
        writes.write(job.raw + off, n);
        done += n;
        progress.update(done, r.name);
        throw_if_interrupted();
      }
      continue;
    }
    const uint64_t rb = r.row_bytes(), n_rows = r.n_rows();
    const uint64_t rows_per_batch = std::max<uint64_t>(1, kBatchBytes / rb);
    for (uint64_t row0 = 0; row0 < n_rows; row0 += rows_per_batch) {
      const uint64_t n = std::min(rows_per_batch, n_rows - row0);
      uint8_t* batch = writes.free_buffer(n * rb);
      produce_rows(pool, job, row0, n, batch, row_buffers);
      throw_if_interrupted();
      writes.write(batch, n * rb);
      done += n * rb;
      progress.update(done, r.name);
    }
  }
  writes.finish();
  writer.commit();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  summary.n_threads = pool.size();
  return summary;
}

uint64_t peak_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  uint64_t kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %llu kB", reinterpret_cast<unsigned long long*>(&kb)) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

}  // namespace keel::tools
