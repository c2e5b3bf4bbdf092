// `keel serve` as a process: SIGTERM (or Ctrl-C) stops it cleanly with exit 143 (130), and a
// second server on a port already taken fails with a clear error instead of sharing it.
#include <gtest/gtest.h>
#include <httplib.h>

#include <array>
#include <cstdio>
#include <string>

#include "serve_process.h"

TEST(ServeProcess, SignalsStopItCleanlyAndATakenPortIsAnError) {
  keel::test::ServeProcess server({"-np", "2", "-t", "1"});
  httplib::Client client("127.0.0.1", server.port());
  auto r = client.Post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 4})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  const std::string cmd = keel::test::keel_binary() + " serve --port " + std::to_string(server.port()) + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 512> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int rc = pclose(p);
  EXPECT_EQ(WEXITSTATUS(rc), 1) << out;
  EXPECT_NE(out.find("cannot listen on 127.0.0.1:" + std::to_string(server.port())), std::string::npos) << out;

  EXPECT_EQ(server.signal_and_wait(SIGTERM), 143) << server.stderr_text();
  EXPECT_NE(server.stderr_text().find("keel serve: stopped"), std::string::npos) << server.stderr_text();
  keel::test::ServeProcess again({"-t", "1"});
  EXPECT_EQ(again.signal_and_wait(SIGINT), 130) << again.stderr_text();
}
