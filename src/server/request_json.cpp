#include "server/request_json.h"

#include <unordered_map>
#include <vector>

#include "server/api.h"

namespace keel::server {

namespace {

// nlohmann's SAX interface, building the document the way its own DOM parser does.
class RequestBuilder {
 public:
  bool null() { return put(json(nullptr)); }
  bool boolean(bool b) { return put(json(b)); }
  bool number_integer(json::number_integer_t v) { return put(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return put(json(v)); }
  bool number_float(json::number_float_t v, const std::string&) { return put(json(v)); }
  bool string(std::string& s) { return put(json(std::move(s))); }
  bool binary(json::binary_t&) { return false; }  // JSON text has none
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(std::string& k) {
    Open& o = open_.back();
    auto& members = static_cast<json::object_t::Container&>(o.node->get_ref<json::object_t&>());
    const auto [at, fresh] = o.key_index.try_emplace(k, members.size());
    if (fresh) members.emplace_back(std::move(k), json());
    value_slot_ = &members[at->second].second;  // a repeated key: its last value wins
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

  json take() { return std::move(root_); }

 private:
  struct Open {
    json* node;                                         // an array or object still being filled
    std::unordered_map<std::string, size_t> key_index;  // objects: key -> position
  };

  // Where the next value goes: the root, the end of the open array, or the slot of the last key.
  json* next_slot() {
    if (open_.empty()) return &root_;
    json& top = *open_.back().node;
    if (top.is_array()) {
      auto& items = top.get_ref<json::array_t&>();
      items.emplace_back();
      return &items.back();
    }
    return value_slot_;
  }
  bool put(json v) {
    *next_slot() = std::move(v);
    return true;
  }
  bool open(json v) {
    if (open_.size() >= static_cast<size_t>(kMaxRequestDepth))
      throw ApiError(400, "the request body nests arrays and objects more than " + std::to_string(kMaxRequestDepth) +
                              " levels deep");
    json* slot = next_slot();
    *slot = std::move(v);
    open_.push_back({slot, {}});  // slots of open containers stay put: only the innermost grows
    return true;
  }
  bool close() {
    open_.pop_back();
    return true;
  }

  json root_;
  std::vector<Open> open_;
  json* value_slot_ = nullptr;
};

}  // namespace

json parse_request_json(const std::string& text) {
  RequestBuilder builder;
  if (!json::sax_parse(text, &builder)) throw ApiError(400, "the request body is not valid JSON");
  return builder.take();
}

}  // namespace keel::server
