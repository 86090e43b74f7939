#include <gtest/gtest.h>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

TEST(Io, MissingFileNamesPath) {
  try {
    gmsa::read_file("/nonexistent/x.txt");
    FAIL() << "expected an error";
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.txt"), std::string::npos);
  }
}
