// `keel inspect FILE [--json]`: metadata, tensors, types and sizes of a GGUF.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "embedded/default_model.h"
#include "gguf/gguf.h"
#include "keel/error.h"

namespace keel::cli {
namespace {

nlohmann::json to_json(const gguf::Value& v) {
  if (auto* a = v.as_array()) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& item : a->items) arr.push_back(to_json(item));
    return arr;
  }
  if (auto* s = v.as_string()) return *s;
  if (auto* b = std::get_if<bool>(&v.data)) return *b;
  if (auto* u = std::get_if<uint64_t>(&v.data)) return *u;
  if (auto* i = std::get_if<int64_t>(&v.data)) return *i;
  return std::get<double>(v.data);
}

}  // namespace

int cmd_inspect(const CommandArgs& argv) {
  Args args("inspect", "Print a GGUF file's metadata, tensors, types and sizes.",
            {{{"--json"}, "", "print one JSON object (arrays of more than 64 items are cut)"}}, "FILE|default");
  if (!args.parse(argv)) return 0;
  if (args.positionals().size() != 1) throw Error("keel inspect: expected exactly one FILE", ErrorKind::usage);
  gguf::File file = embedded::open_gguf(args.positionals()[0]);

  if (args.has("--json")) {
    nlohmann::json out;
    out["path"] = file.path();
    out["version"] = file.version();
    out["alignment"] = file.alignment();
    out["tensor_bytes"] = file.tensor_bytes();
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [key, value] : file.metadata()) {
      if (auto* a = value.as_array(); a && a->items.size() > 64) {
        meta[key] = {{"type", std::string(gguf::value_type_name(a->elem_type))}, {"count", a->items.size()}};
      } else {
        meta[key] = to_json(value);
      }
    }
    out["metadata"] = meta;
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : file.tensors()) {
      std::vector<uint64_t> shape(t.ne, t.ne + t.n_dims);
      tensors.push_back({{"name", t.name}, {"type", std::string(quant::type_name(t.type))},
                         {"shape", shape}, {"offset", t.offset}, {"bytes", t.n_bytes}});
    }
    out["tensors"] = tensors;
    std::cout << out.dump(1) << "\n";
    return 0;
  }

  std::printf("file: %s\nGGUF version %u, alignment %llu, %zu metadata keys, %zu tensors, %.2f MB of tensor data\n\n",
              file.path().c_str(), file.version(), static_cast<unsigned long long>(file.alignment()),
              file.metadata().size(), file.tensors().size(), static_cast<double>(file.tensor_bytes()) / 1e6);
  std::printf("metadata:\n");
  for (const auto& [key, value] : file.metadata())
    std::printf("  %-44s %-7s %s\n", key.c_str(), std::string(gguf::value_type_name(value.type)).c_str(),
                value.to_display().c_str());
  std::printf("\ntensors:\n");
  for (const auto& t : file.tensors())
    std::printf("  %-36s %-6s %-22s %12llu bytes\n", t.name.c_str(), std::string(quant::type_name(t.type)).c_str(),
                t.shape_string().c_str(), static_cast<unsigned long long>(t.n_bytes));
  return 0;
}

}  // namespace keel::cli
