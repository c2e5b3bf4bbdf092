#include "tools_lib/model_writer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <mutex>

#include "backend/cpu/thread_pool.h"
#include "keel/error.h"
#include "quant/quantize.h"
#include "tools_lib/interrupt.h"

namespace keel::tools {
namespace {

constexpr uint64_t kBatchBytes = uint64_t{2} << 20;  // output bytes per batch

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
  if (job.raw == nullptr && !job.rows)
    throw Error("internal error: tensor '" + r.name + "' has neither data nor a row source");
  if (job.raw == nullptr && !quant::can_quantize_to(r.type))
    throw Error("tensor '" + r.name + "': keel cannot write type " + std::string(quant::type_name(r.type)));
}

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
  std::vector<uint8_t> batch;
  uint64_t done = 0;

  for (const TensorJob& job : jobs) {
    const gguf::TensorRecord& r = job.record;
    throw_if_interrupted();
    if (job.raw) {
      for (uint64_t off = 0; off < r.n_bytes(); off += kBatchBytes) {
        const uint64_t n = std::min(kBatchBytes, r.n_bytes() - off);
        writer.write(job.raw + off, n);
        done += n;
        progress.update(done, r.name);
        throw_if_interrupted();
      }
      continue;
    }
    const uint64_t rb = r.row_bytes(), n_rows = r.n_rows(), ne0 = r.shape[0];
    const uint64_t rows_per_batch = std::max<uint64_t>(1, kBatchBytes / rb);
    batch.resize(std::min(rows_per_batch, n_rows) * rb);
    for (uint64_t row0 = 0; row0 < n_rows; row0 += rows_per_batch) {
      const uint64_t n = std::min(rows_per_batch, n_rows - row0);
      std::exception_ptr error;
      std::mutex error_mutex;
      pool.run([&](int ith, int nth) {
        try {
          float* x = row_buffers[ith].data();
          for (uint64_t i = ith; i < n; i += nth) {
            if (interrupted()) return;
            job.rows(row0 + i, x);
            quant::quantize_row(r.type, x, batch.data() + i * rb, static_cast<int64_t>(ne0));
          }
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (!error) error = std::current_exception();
        }
      });
      if (error) std::rethrow_exception(error);
      throw_if_interrupted();
      writer.write(batch.data(), n * rb);
      done += n * rb;
      progress.update(done, r.name);
    }
  }
  writer.commit();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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
