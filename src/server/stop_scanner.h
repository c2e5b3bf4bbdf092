// Stop strings over a stream of generated text: what may be emitted now, and where a stop string
// completes (the text before it is the answer).
#pragma once
#include <string>
#include <vector>

namespace keel::server {

// Holds back generated text that may be the start of a stop string; reports where one begins.
class StopScanner {
 public:
  explicit StopScanner(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Appends `text`; returns what is safe to emit. Sets stopped() once a stop string is complete.
  std::string push(const std::string& text);
  std::string flush();  // the held-back text at the end (no stop string followed)
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace keel::server
