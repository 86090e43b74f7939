#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

#include "gmsa/data/stream.h"

namespace {

std::string write_corpus(int docs) {
  auto path = std::filesystem::temp_directory_path() / ("gmsa-stream-" + std::to_string(::getpid()) + ".txt");
  std::ofstream f(path);
  for (int i = 0; i < docs; ++i) f << "doc " << i << "\n\n";
  return path.string();
}

}  // namespace

TEST(ShuffledStream, EachEpochIsAPermutationAndTheOrderIsSeeded) {
  const auto path = write_corpus(25);
  gmsa::ShuffledStream a(path, gmsa::CorpusFormat::Text, 8, 7), b(path, gmsa::CorpusFormat::Text, 8, 7);
  gmsa::ShuffledStream c(path, gmsa::CorpusFormat::Text, 8, 8);
  std::vector<std::string> first, same, other;
  for (int i = 0; i < 50; ++i) {
    first.push_back(a.next());
    same.push_back(b.next());
    other.push_back(c.next());
  }
  EXPECT_EQ(first, same);
  EXPECT_NE(first, other);
  std::set<std::string> epoch0(first.begin(), first.begin() + 25), epoch1(first.begin() + 25, first.end());
  EXPECT_EQ(epoch0.size(), 25u);
  EXPECT_EQ(epoch1.size(), 25u);
  EXPECT_NE(std::vector<std::string>(first.begin(), first.begin() + 25),
            std::vector<std::string>(first.begin() + 25, first.end()));
  // A buffer of 8 cannot move a document more than 7 places ahead of its position in the file.
  for (int i = 0; i < 25; ++i) EXPECT_LE(std::stoi(first[i].substr(4)), i + 7) << i;
  std::filesystem::remove(path);
}

TEST(ShuffledStream, SkipToResumesTheExactOrder) {
  const auto path = write_corpus(13);
  gmsa::ShuffledStream a(path, gmsa::CorpusFormat::Text, 4, 3);
  std::vector<std::string> all;
  for (int i = 0; i < 40; ++i) all.push_back(a.next());
  for (int k : {0, 5, 13, 27}) {
    gmsa::ShuffledStream b(path, gmsa::CorpusFormat::Text, 4, 3);
    b.skip_to(k);
    for (int i = k; i < 40; ++i) ASSERT_EQ(b.next(), all[i]) << "resumed at " << k;
  }
  std::filesystem::remove(path);
}
