// Facts about this build, for `keel --version` (the definition is generated at build time by
// cmake/build_info.cmake).
#pragma once

namespace keel {

struct BuildInfo {
  const char* version;     // the project version, "0.1.0"
  const char* git_commit;  // short hash, "-dirty" when tracked files had changes; "unknown" outside git
  const char* build_type;  // CMAKE_BUILD_TYPE
};

const BuildInfo& build_info();

}  // namespace keel
