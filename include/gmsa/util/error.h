#pragma once
// One error type for everything a user can get wrong (files, configs, shapes). The message
// names where (file, line, key) and what; the CLI prints it as one line and exits non-zero.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace gmsa {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace gmsa

// Cheap precondition check with a formatted message: GMSA_CHECK(n > 0, "{}: empty", path).
#define GMSA_CHECK(cond, ...)            \
  do {                                   \
    if (!(cond)) ::gmsa::fail(__VA_ARGS__); \
  } while (0)
