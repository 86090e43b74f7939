#include "gmsa/io/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <stdlib.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace fs = std::filesystem;
using gmsa::SafetensorsFile;
using gmsa::StateDict;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "gmsa_st_XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& path() const { return path_; }
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A hand-made file: length prefix (the real one unless `len` overrides), header, data.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               std::optional<uint64_t> len = std::nullopt) {
  std::ofstream(path, std::ios::binary) << le64(len.value_or(header.size())) << header << data;
}

// Runs `fn`, which must throw gmsa::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const gmsa::Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  }
  ADD_FAILURE() << "no gmsa::Error thrown; expected one mentioning " << parts.at(0);
}

void expect_open_error(const std::string& path, const std::string& problem) {
  expect_error([&] { SafetensorsFile f(path); }, {path, problem});
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Same dtype, shape and bytes (NaN-safe, unlike torch::equal on floats).
void expect_identical(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  auto ca = a.contiguous(), cb = b.contiguous();
  size_t n = a.numel() * a.element_size();
  EXPECT_TRUE(n == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), n) == 0) << what;
}

std::vector<std::pair<std::string, torch::Tensor>> sample_tensors() {
  torch::manual_seed(7);
  return {
      {"f64", torch::randn({2, 3}, torch::kFloat64)},
      {"f32", torch::randn({4})},
      {"f16", torch::randn({3, 1, 2}).to(torch::kFloat16)},
      {"bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"i64", torch::tensor({int64_t{1} << 62, int64_t{-3}, int64_t{0}, int64_t{7}}).reshape({2, 2})},
      {"i32", torch::tensor({-2147483647 - 1, 2147483647, 5}, torch::kInt32)},
      {"i16", torch::tensor({-32768, 32767}, torch::kInt16)},
      {"i8", torch::tensor({-128, 127, -1}, torch::kInt8)},
      {"u8", torch::tensor({0, 255, 128}, torch::kUInt8)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 3})},
      {"empty_i64", torch::zeros({0}, torch::kInt64)},
      {"transposed", torch::arange(6, torch::kFloat32).reshape({2, 3}).t()},  // non-contiguous
      {"slice", torch::arange(10, torch::kInt32).slice(0, 3, 7)},           // storage offset
  };
}

}  // namespace

TEST(Safetensors, RoundTripDtypesAndShapes) {
  TempDir dir;
  auto tensors = sample_tensors();
  std::string path = dir.file("all.safetensors");
  gmsa::save_safetensors(path, tensors);

  SafetensorsFile f(path);
  ASSERT_EQ(f.keys().size(), tensors.size());
  EXPECT_TRUE(f.metadata().empty());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f.has(name)) << name;
    EXPECT_EQ(f.info(name).shape, t.sizes().vec()) << name;
    EXPECT_EQ(f.info(name).nbytes(), t.numel() * t.element_size()) << name;
    expect_identical(f.tensor(name), t, name);
    expect_identical(f.tensor_view(name), t, name + " (view)");
  }
  EXPECT_EQ(f.info("bf16").dtype_name, "BF16");
  EXPECT_EQ(f.info("bool").dtype_name, "BOOL");
  EXPECT_TRUE(f.info("scalar").shape.empty());
  EXPECT_FALSE(f.has("nope"));
  expect_error([&] { f.info("nope"); }, {path, "no tensor named \"nope\""});

  // Header padded to 8 bytes; every tensor's data aligned to its element size.
  std::string raw = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw.find("__metadata__"), std::string::npos);
  for (const auto& name : f.keys())
    EXPECT_EQ(f.info(name).begin % c10::elementSize(f.info(name).dtype), 0u) << name;
}

TEST(Safetensors, FileOrderIsLargestElementFirstThenCallerOrder) {
  TempDir dir;
  std::string path = dir.file("order.safetensors");
  gmsa::save_safetensors(path, {{"a_u8", torch::zeros({3}, torch::kUInt8)},
                                {"z_f32", torch::zeros({1})},
                                {"c_bf16", torch::zeros({1}, torch::kBFloat16)},
                                {"b_f32", torch::zeros({2})}});
  std::vector<std::string> expected = {"z_f32", "b_f32", "c_bf16", "a_u8"};
  EXPECT_EQ(SafetensorsFile(path).keys(), expected);
  // Offsets: z [0,4], b [4,12], c [12,14], a [14,17].
  EXPECT_EQ(SafetensorsFile(path).info("a_u8").begin, 14u);
  EXPECT_EQ(SafetensorsFile(path).info("a_u8").end, 17u);
}

TEST(Safetensors, MetadataRoundTrip) {
  TempDir dir;
  std::string path = dir.file("meta.safetensors");
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "1200"}, {"note", "ü \"q\""}};
  gmsa::save_safetensors(path, {{"w", torch::ones({2})}}, meta);
  EXPECT_EQ(SafetensorsFile(path).metadata(), meta);
}

TEST(Safetensors, Bf16AndF16AreBitExact) {
  TempDir dir;
  // Every 16-bit pattern, NaN payloads and signed zeros included.
  auto bits = torch::arange(-32768, 32768, torch::kInt32).to(torch::kInt16);
  std::string path = dir.file("bits.safetensors");
  gmsa::save_safetensors(path, {{"bf16", bits.view(torch::kBFloat16)},
                                {"f16", bits.view(torch::kFloat16)}});
  SafetensorsFile f(path);
  EXPECT_TRUE(torch::equal(f.tensor("bf16").view(torch::kInt16), bits));
  EXPECT_TRUE(torch::equal(f.tensor("f16").view(torch::kInt16), bits));

  // On disk: bf16 1.0 is 0x3F80, stored little-endian as 80 3F; -2.0 is 0xC000 -> 00 C0.
  std::string one = dir.file("one.safetensors");
  gmsa::save_safetensors(one, {{"x", torch::tensor({1.0f, -2.0f}).to(torch::kBFloat16)}});
  std::string raw = read_bytes(one);
  EXPECT_EQ(raw.substr(raw.size() - 4), std::string("\x80\x3F\x00\xC0", 4));
}

TEST(Safetensors, ReadsHandMadeFileWithUnalignedPadding) {
  TempDir dir;
  std::string path = dir.file("hand.safetensors");
  // Header of 105 bytes + 2 spaces (107, not a multiple of 8: legal). Data: I32 [7, -1] then
  // a U8 scalar 200; "b" comes first in the buffer although it sorts after "a".
  std::string header =
      R"({"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"U8","shape":[],"data_offsets":[8,9]}})";
  ASSERT_EQ(header.size(), 105u);
  header += "  ";
  write_raw(path, header, std::string("\x07\0\0\0\xff\xff\xff\xff\xc8", 9));
  SafetensorsFile f(path);
  EXPECT_EQ(f.keys(), (std::vector<std::string>{"b", "a"}));
  EXPECT_TRUE(torch::equal(f.tensor("b"), torch::tensor({7, -1}, torch::kInt32)));
  EXPECT_EQ(f.tensor("a").item<uint8_t>(), 200);
  EXPECT_EQ(f.tensor("a").dim(), 0);
  // The data start at file offset 8 + 107 = 115 (the mapping is page-aligned), so the I32 is
  // misaligned and each view falls back to a fresh copy; the U8 is always viewable in place.
  EXPECT_TRUE(torch::equal(f.tensor_view("b"), torch::tensor({7, -1}, torch::kInt32)));
  EXPECT_NE(f.tensor_view("b").data_ptr(), f.tensor_view("b").data_ptr());
  EXPECT_EQ(f.tensor_view("a").data_ptr(), f.tensor_view("a").data_ptr());
}

TEST(Safetensors, ViewIsZeroCopyAndOutlivesTheFileObject) {
  TempDir dir;
  std::string path = dir.file("v.safetensors");
  auto w = torch::randn({16, 8});
  gmsa::save_safetensors(path, {{"w", w}});
  torch::Tensor v1, v2, copy;
  {
    SafetensorsFile f(path);
    v1 = f.tensor_view("w");
    v2 = f.tensor_view("w");
    copy = f.tensor("w");
  }
  EXPECT_EQ(v1.data_ptr(), v2.data_ptr());  // both point into the one mapping
  EXPECT_NE(v1.data_ptr(), copy.data_ptr());
  EXPECT_TRUE(torch::equal(v1, w));  // mapping still alive after the file object is gone
  copy.mul_(2);                      // the copy is writable
  EXPECT_TRUE(torch::equal(copy, w * 2));
}

TEST(Safetensors, DtypeConversionOnLoad) {
  TempDir dir;
  std::string path = dir.file("c.safetensors");
  auto w = torch::randn({3, 4}).to(torch::kBFloat16);
  gmsa::save_safetensors(path, {{"w", w}});
  SafetensorsFile f(path);
  auto f32 = f.tensor("w", torch::kFloat32);
  EXPECT_EQ(f32.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(f32, w.to(torch::kFloat32)));  // bf16 -> f32 is exact
  expect_identical(f.tensor("w", torch::kBFloat16), w, "same dtype");
  auto sd = gmsa::load_state_dict(path, torch::kFloat64);
  EXPECT_EQ(sd["w"].scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::equal(sd["w"], w.to(torch::kFloat64)));
}

TEST(Safetensors, OverwriteIsAtomicAndLeavesNoTemporaries) {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  gmsa::save_safetensors(path, {{"w", torch::ones({4})}});
  SafetensorsFile old(path);  // keeps the old inode mapped
  gmsa::save_safetensors(path, {{"w", torch::zeros({2})}});
  EXPECT_TRUE(torch::equal(old.tensor("w"), torch::ones({4})));
  EXPECT_TRUE(torch::equal(SafetensorsFile(path).tensor("w"), torch::zeros({2})));
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"m.safetensors"});
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  expect_error([&] { gmsa::save_safetensors(path, {{"a", torch::ones(1)}, {"a", torch::ones(1)}}); },
               {path, "\"a\" appears twice"});
  expect_error([&] { gmsa::save_safetensors(path, {{"__metadata__", torch::ones(1)}}); },
               {path, "cannot be a tensor name"});
  expect_error([&] { gmsa::save_safetensors(path, {{"c", torch::ones(2, torch::kComplexFloat)}}); },
               {path, "tensor \"c\"", "ComplexFloat", "cannot be saved"});
  expect_error([&] { gmsa::save_safetensors(path, {{"u", torch::Tensor()}}); },
               {path, "tensor \"u\" is undefined"});
  EXPECT_TRUE(dir.listing().empty());  // nothing written, no temporary left behind
}

// ---- validation at open: one hand-made corrupt file per problem ----

class SafetensorsCorrupt : public ::testing::Test {
 protected:
  TempDir dir;
  std::string path = dir.file("corrupt.safetensors");
  // A one-tensor header around `entry`, with `data` as the buffer.
  void write_entry(const std::string& entry, const std::string& data) {
    write_raw(path, R"({"w":)" + entry + "}", data);
  }
};

TEST_F(SafetensorsCorrupt, MissingFile) { expect_open_error(path, "cannot open"); }

TEST_F(SafetensorsCorrupt, TruncatedBelowLengthPrefix) {
  std::ofstream(path, std::ios::binary) << std::string(5, '\0');
  expect_open_error(path, "file is 5 bytes, shorter than the 8-byte header length");
}

TEST_F(SafetensorsCorrupt, HeaderLengthBeyondFile) {
  write_raw(path, "{}", "", 1000);
  expect_open_error(path, "header length 1000 exceeds the 2 bytes that follow it");
}

TEST_F(SafetensorsCorrupt, HeaderLengthAbsurd) {
  write_raw(path, "{}", "", uint64_t{1} << 40);
  expect_open_error(path, "header length 1099511627776 is over the 100000000-byte limit");
}

TEST_F(SafetensorsCorrupt, TruncatedData) {
  // A valid file with its last 4 bytes cut off: the tensor now ends past the buffer.
  gmsa::save_safetensors(path, {{"w", torch::ones({4})}});
  fs::resize_file(path, fs::file_size(path) - 4);
  expect_open_error(path, "tensor \"w\": data_offsets [0,16] lie outside the 12-byte data buffer");
}

TEST_F(SafetensorsCorrupt, BadJson) {
  write_raw(path, R"({"w": {"dtype": "F32",)", "");
  expect_open_error(path, "header is not valid JSON");
}

TEST_F(SafetensorsCorrupt, HeaderNotAnObject) {
  write_raw(path, "[1, 2]", "");
  expect_open_error(path, "header is array, expected a JSON object");
}

TEST_F(SafetensorsCorrupt, DuplicateName) {
  write_raw(path,
            R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
            "ab");
  expect_open_error(path, "header names \"w\" twice");
}

TEST_F(SafetensorsCorrupt, MissingFields) {
  write_entry(R"({"shape":[1],"data_offsets":[0,4]})", "abcd");
  expect_open_error(path, "tensor \"w\": missing \"dtype\"");
  write_entry(R"({"dtype":"F32","data_offsets":[0,4]})", "abcd");
  expect_open_error(path, "tensor \"w\": missing \"shape\"");
  write_entry(R"({"dtype":"F32","shape":[1]})", "abcd");
  expect_open_error(path, "tensor \"w\": missing \"data_offsets\"");
}

TEST_F(SafetensorsCorrupt, WrongJsonTypes) {
  write_entry("[1]", "");
  expect_open_error(path, "tensor \"w\": entry is array, expected an object");
  write_entry(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})", "abcd");
  expect_open_error(path, "tensor \"w\": \"dtype\" is number, expected a string");
  write_entry(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})", "abcd");
  expect_open_error(path, "tensor \"w\": \"shape\" is string, expected an array of integers");
  write_entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", "abcd");
  expect_open_error(path, "shape [1.5] holds 1.5, expected non-negative integers");
  write_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[4]})", "abcd");
  expect_open_error(path, "\"data_offsets\" is [4], expected [begin, end]");
  write_raw(path, R"({"__metadata__":{"step":3}})", "");
  expect_open_error(path, "\"__metadata__\" key \"step\" is number, expected a string");
}

TEST_F(SafetensorsCorrupt, UnknownDtype) {
  write_entry(R"({"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]})", "a");
  expect_open_error(path, "tensor \"w\": unknown or unsupported dtype \"F8_E4M3\"");
}

TEST_F(SafetensorsCorrupt, NegativeDimension) {
  write_entry(R"({"dtype":"F32","shape":[2,-2],"data_offsets":[0,0]})", "");
  expect_open_error(path, "tensor \"w\": negative dimension -2 in shape [2,-2]");
}

TEST_F(SafetensorsCorrupt, OffsetsReversed) {
  write_entry(R"({"dtype":"U8","shape":[0],"data_offsets":[4,2]})", "abcd");
  expect_open_error(path, "tensor \"w\": data_offsets [4,2] have begin > end");
}

TEST_F(SafetensorsCorrupt, OffsetsOutsideBuffer) {
  write_entry(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})", std::string(8, 'x'));
  expect_open_error(path, "tensor \"w\": data_offsets [0,16] lie outside the 8-byte data buffer");
}

TEST_F(SafetensorsCorrupt, SizeMismatch) {
  // F32 [2, 3] needs 6 x 4 = 24 bytes; the offsets give 20.
  write_entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,20]})", std::string(20, 'x'));
  expect_open_error(path, "tensor \"w\" (F32, shape [2, 3]): data_offsets [0,20] span 20 bytes, expected 24 (6 elements x 4 bytes)");
}

TEST_F(SafetensorsCorrupt, OverlappingTensors) {
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(12, 'x'));
  expect_open_error(path, "tensor \"b\": data_offsets [4,12] overlap tensor \"a\" at [0,8]");
}

TEST_F(SafetensorsCorrupt, HolesInBuffer) {
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
            std::string(12, 'x'));
  expect_open_error(path, "bytes [4,8) of the data buffer belong to no tensor");
  write_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})", std::string(6, 'x'));
  expect_open_error(path, "bytes [4,6) at the end of the data buffer belong to no tensor");
}

TEST_F(SafetensorsCorrupt, BoolByteOtherThanZeroOrOne) {
  write_entry(R"({"dtype":"BOOL","shape":[3],"data_offsets":[0,3]})", std::string("\x01\x00\x02", 3));
  SafetensorsFile f(path);  // the header is fine; the data are checked when read
  expect_error([&] { f.tensor("w"); }, {path, "tensor \"w\": BOOL element 2 is stored as byte 2"});
  expect_error([&] { f.tensor_view("w"); }, {path, "BOOL element 2"});
}

TEST(Safetensors, EmptyFileWithMetadataOnly) {
  TempDir dir;
  std::string path = dir.file("empty.safetensors");
  gmsa::save_safetensors(path, StateDict("Tensor"), {{"k", "v"}});
  SafetensorsFile f(path);
  EXPECT_TRUE(f.keys().empty());
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_EQ(gmsa::load_state_dict(path).size(), 0u);
}

TEST(Safetensors, WriteIntoMissingDirectoryNamesTheFile) {
  TempDir dir;
  std::string path = dir.file("no/such/dir/x.safetensors");
  expect_error([&] { gmsa::save_safetensors(path, {{"w", torch::ones(1)}}); }, {path, "cannot write"});
}

// ---- sharded checkpoints ----

namespace {
StateDict ten_tensors() {
  StateDict sd("Tensor");
  for (int i = 0; i < 10; ++i)
    sd.insert("layer." + std::to_string(i) + ".weight", torch::full({100}, float(i)));  // 400 bytes
  return sd;
}

void expect_same_dict(const StateDict& got, const StateDict& want) {
  ASSERT_EQ(got.keys(), want.keys());
  for (const auto& item : want) expect_identical(got[item.key()], item.value(), item.key());
}
}  // namespace

TEST(SafetensorsSharded, SaveAndLoad) {
  TempDir dir;
  auto sd = ten_tensors();
  // 400-byte tensors, 1000-byte shards: two per shard (800 + 400 > 1000), so 5 shards.
  gmsa::save_sharded(dir.path(), sd, 1000, {{"step", "9"}});
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{
                               "model-00001-of-00005.safetensors", "model-00002-of-00005.safetensors",
                               "model-00003-of-00005.safetensors", "model-00004-of-00005.safetensors",
                               "model-00005-of-00005.safetensors", "model.safetensors.index.json"}));
  auto index = nlohmann::json::parse(gmsa::read_file(dir.file("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 4000);
  EXPECT_EQ(index["weight_map"].size(), 10u);
  EXPECT_EQ(index["weight_map"]["layer.4.weight"], "model-00003-of-00005.safetensors");
  SafetensorsFile shard(dir.file("model-00003-of-00005.safetensors"));
  EXPECT_EQ(shard.keys(), (std::vector<std::string>{"layer.4.weight", "layer.5.weight"}));
  EXPECT_EQ(shard.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "9"}}));

  expect_same_dict(gmsa::load_state_dict(dir.path()), sd);
  expect_same_dict(gmsa::load_state_dict(dir.file("model.safetensors.index.json")), sd);
}

TEST(SafetensorsSharded, OversizedTensorGetsItsOwnShard) {
  TempDir dir;
  StateDict sd("Tensor");
  sd.insert("small", torch::zeros({10}));  // 40 bytes
  sd.insert("big", torch::zeros({100}));   // 400 bytes > 100
  sd.insert("tail", torch::zeros({10}));
  gmsa::save_sharded(dir.path(), sd, 100);
  auto index = nlohmann::json::parse(gmsa::read_file(dir.file("model.safetensors.index.json")));
  EXPECT_EQ(index["weight_map"]["small"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["big"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["tail"], "model-00003-of-00003.safetensors");
  expect_same_dict(gmsa::load_state_dict(dir.path()), sd);
}

TEST(SafetensorsSharded, SingleFileWhenItFitsAndStaleFilesRemoved) {
  TempDir dir;
  auto sd = ten_tensors();
  gmsa::save_sharded(dir.path(), sd, 1000);
  std::ofstream(dir.file("config.json")) << "{}";  // not ours: must survive
  gmsa::save_sharded(dir.path(), sd, 4000);
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_EQ(SafetensorsFile(dir.file("model.safetensors")).metadata().at("format"), "pt");
  expect_same_dict(gmsa::load_state_dict(dir.path()), sd);
  expect_same_dict(gmsa::load_state_dict(dir.file("model.safetensors")), sd);

  gmsa::save_sharded(dir.path(), sd, 2000);  // 2 shards of 5 x 400 bytes: the single file must go
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{
                               "config.json", "model-00001-of-00002.safetensors",
                               "model-00002-of-00002.safetensors", "model.safetensors.index.json"}));
  expect_same_dict(gmsa::load_state_dict(dir.path()), sd);
}

TEST(SafetensorsSharded, MissingShard) {
  TempDir dir;
  gmsa::save_sharded(dir.path(), ten_tensors(), 1000);
  std::string index = dir.file("model.safetensors.index.json");
  fs::remove(dir.file("model-00002-of-00005.safetensors"));
  expect_error([&] { gmsa::load_state_dict(dir.path()); },
               {index, "model-00002-of-00005.safetensors", "layer.2.weight", "does not exist"});
}

TEST(SafetensorsSharded, TensorMissingFromItsShard) {
  TempDir dir;
  gmsa::save_sharded(dir.path(), ten_tensors(), 1000);
  std::string index = dir.file("model.safetensors.index.json");
  auto j = nlohmann::json::parse(gmsa::read_file(index));
  j["weight_map"]["layer.0.weight"] = "model-00005-of-00005.safetensors";
  gmsa::write_file_atomic(index, j.dump());
  expect_error([&] { gmsa::load_state_dict(index); },
               {index, "tensor \"layer.0.weight\" is mapped to", "model-00005-of-00005.safetensors",
                "which does not contain it"});
}

TEST(SafetensorsSharded, BadIndexAndEmptyDirectory) {
  TempDir dir;
  expect_error([&] { gmsa::load_state_dict(dir.path()); },
               {dir.path(), "neither model.safetensors nor model.safetensors.index.json"});
  std::string index = dir.file("model.safetensors.index.json");
  gmsa::write_file_atomic(index, R"({"metadata": {}})");
  expect_error([&] { gmsa::load_state_dict(dir.path()); }, {index, "missing \"weight_map\""});
  gmsa::write_file_atomic(index, R"({"weight_map": {"w": "../x.safetensors"}})");
  expect_error([&] { gmsa::load_state_dict(dir.path()); }, {index, "not a file name next to the index"});
  gmsa::write_file_atomic(index, R"({"weight_map": )");
  expect_error([&] { gmsa::load_state_dict(dir.path()); }, {index, "not valid JSON"});
}

// Throughput, run by hand: ./build/gmsa_tests --gtest_also_run_disabled_tests
//   --gtest_filter='*Throughput*'  (GMSA_ST_BENCH_MB sets the size, default 512).
TEST(SafetensorsBench, DISABLED_Throughput) {
  const char* env = std::getenv("GMSA_ST_BENCH_MB");
  int64_t mb = env ? std::atoll(env) : 512;
  TempDir dir;
  std::string path = dir.file("big.safetensors");
  StateDict sd("Tensor");
  for (int64_t i = 0; i < mb / 64; ++i)
    sd.insert("t" + std::to_string(i), torch::randn({16 * 1024 * 1024}));  // 64 MiB each
  using clock = std::chrono::steady_clock;
  auto seconds = [](clock::time_point a) { return std::chrono::duration<double>(clock::now() - a).count(); };
  auto t0 = clock::now();
  gmsa::save_safetensors(path, sd);
  double save_s = seconds(t0);
  t0 = clock::now();
  SafetensorsFile f(path);
  double open_s = seconds(t0);
  t0 = clock::now();
  for (const auto& k : f.keys()) f.tensor(k);
  double copy_s = seconds(t0);
  t0 = clock::now();
  double sum = 0;
  for (const auto& k : f.keys()) sum += f.tensor_view(k)[0].item<float>();
  double view_s = seconds(t0);
  std::printf("%lld MiB: save %.2f s (%.0f MiB/s, incl. fsync), open %.4f s, copy-all %.2f s "
              "(%.0f MiB/s), view-all %.4f s (%g)\n", static_cast<long long>(mb), save_s,
              mb / save_s, open_s, copy_s, mb / copy_s, view_s, sum);
}
