#include "src/model/gguf.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/types.h"
#include "src/model/gguf_writer.h"

namespace crescent::model {
namespace {

using kernels::GgmlType;
using ::testing::HasSubstr;

// ---- helpers --------------------------------------------------------------------------------

template <typename T>
std::string Bytes(T v) {
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));
  return s;
}

std::string GgufString(std::string_view s) { return Bytes<uint64_t>(s.size()) + std::string(s); }

template <typename T>
void Patch(std::string* file, size_t offset, T v) {
  ASSERT_LE(offset + sizeof(T), file->size());
  std::memcpy(file->data() + offset, &v, sizeof(T));
}

// Offset of the u64 data-offset field of tensor `name` (whose description has `n_dims` dims).
size_t TensorOffsetField(const std::string& file, const std::string& name, int n_dims) {
  size_t at = file.find(GgufString(name));
  EXPECT_NE(at, std::string::npos) << name;
  return at + 8 + name.size() + 4 + 8 * n_dims + 4;
}

absl::Status OpenStatus(std::string bytes) {
  return GgufFile::FromBuffer(std::move(bytes)).status();
}

// Expects `bytes` to be rejected with InvalidArgument whose message contains every piece.
void ExpectInvalid(std::string bytes, const std::vector<std::string>& pieces) {
  absl::Status s = OpenStatus(std::move(bytes));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("byte offset")) << s;
  for (const std::string& p : pieces) EXPECT_THAT(std::string(s.message()), HasSubstr(p)) << s;
}

// A small valid file with one key and two tensors, for corruption tests.
GgufWriter SmallWriter() {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddTensorF32("a", {8}, std::vector<float>(8, 1.0f));
  w.AddTensorF32("b", {4, 2}, std::vector<float>(8, 2.0f));
  return w;
}

std::string ModelPath() {
  const char* p = std::getenv("CRESCENT_MODEL");
  return p == nullptr ? "" : p;
}

bool FileExists(const std::string& path) { return !path.empty() && std::ifstream(path).good(); }

// ---- round trips ----------------------------------------------------------------------------

TEST(GgufTest, ScalarsRoundTrip) {
  GgufWriter w;
  w.AddUint8("u8", 200);
  w.AddInt8("i8", -100);
  w.AddUint16("u16", 60000);
  w.AddInt16("i16", -30000);
  w.AddUint32("u32", 4000000000u);
  w.AddInt32("i32", -2000000000);
  w.AddUint64("u64", 18000000000000000000ull);
  w.AddInt64("i64", -9000000000000000000ll);
  w.AddFloat32("f32", 1.5f);
  w.AddFloat64("f64", -2.25);
  w.AddBool("t", true);
  w.AddBool("f", false);
  w.AddString("s", std::string("h\0llo", 5));
  w.AddString("empty", "");
  auto file = GgufFile::FromBuffer(w.Finish());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_TRUE(f.tensors().empty());

  EXPECT_EQ(*f.GetUint("u8"), 200u);
  EXPECT_EQ(*f.GetInt("i8"), -100);
  EXPECT_EQ(*f.GetUint("u16"), 60000u);
  EXPECT_EQ(*f.GetInt("i16"), -30000);
  EXPECT_EQ(*f.GetUint("u32"), 4000000000u);
  EXPECT_EQ(*f.GetInt("u32"), 4000000000);
  EXPECT_EQ(*f.GetInt("i32"), -2000000000);
  EXPECT_EQ(*f.GetUint("u64"), 18000000000000000000ull);
  EXPECT_EQ(*f.GetInt("i64"), -9000000000000000000ll);
  EXPECT_EQ(*f.GetFloat("f32"), 1.5);
  EXPECT_EQ(*f.GetFloat("f64"), -2.25);
  EXPECT_EQ(*f.GetFloat("i16"), -30000.0);
  EXPECT_EQ(*f.GetFloat("u64"), 18000000000000000000.0);
  EXPECT_TRUE(*f.GetBool("t"));
  EXPECT_FALSE(*f.GetBool("f"));
  EXPECT_EQ(*f.GetString("s"), std::string("h\0llo", 5));
  EXPECT_EQ(*f.GetString("empty"), "");

  EXPECT_EQ(*f.TypeOf("u8"), GgufValueType::kUint8);
  EXPECT_EQ(*f.TypeOf("i64"), GgufValueType::kInt64);
  EXPECT_EQ(*f.TypeOf("f64"), GgufValueType::kFloat64);
  EXPECT_EQ(*f.TypeOf("s"), GgufValueType::kString);
  EXPECT_TRUE(f.Has("f32"));
  EXPECT_FALSE(f.Has("f3"));
  EXPECT_EQ(f.Keys(), (std::vector<std::string>{"u8", "i8", "u16", "i16", "u32", "i32", "u64",
                                                "i64", "f32", "f64", "t", "f", "s", "empty"}));
}

TEST(GgufTest, GetterErrorsNameKeyAndType) {
  GgufWriter w;
  w.AddUint32("n", 7);
  w.AddInt32("neg", -3);
  w.AddUint64("big", std::numeric_limits<uint64_t>::max());
  w.AddString("s", "x");
  w.AddFloat32("f", 1.0f);
  w.AddInt32Array("arr", {1, 2});
  auto file = GgufFile::FromBuffer(w.Finish());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;

  absl::Status s = f.GetString("missing.key").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing.key"));
  EXPECT_EQ(f.TypeOf("missing.key").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(f.GetStringArray("missing.key").status().code(), absl::StatusCode::kNotFound);

  s = f.GetString("n").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'n'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("uint32"));

  s = f.GetUint("s").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("string"));
  EXPECT_EQ(f.GetUint("f").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetBool("n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetFloat("s").status().code(), absl::StatusCode::kInvalidArgument);

  s = f.GetInt("arr").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("array of int32"));
  EXPECT_EQ(f.GetStringArray("arr").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetIntArray("n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.ArraySize("n").status().code(), absl::StatusCode::kInvalidArgument);

  s = f.GetUint("neg").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("neg"));
  s = f.GetInt("big").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("big"));
  EXPECT_EQ(*f.GetUint("big"), std::numeric_limits<uint64_t>::max());
}

TEST(GgufTest, ArraysRoundTrip) {
  GgufWriter w;
  std::vector<std::string> tokens = {"<s>", "", std::string("\0\xff", 2), "hello world"};
  w.AddStringArray("tokens", tokens);
  w.AddFloatArray("scores", {0.5f, -1.0f, 3.25f});
  w.AddFloat64Array("f64s", {1e300, -0.5});
  w.AddInt32Array("types", {1, -2, 3});
  w.AddUint32Array("u32s", {4000000000u});
  w.AddInt64Array("i64s", {-5, std::numeric_limits<int64_t>::max()});
  w.AddUint8Array("u8s", {0, 255});
  w.AddBoolArray("bools", {true, false, true});
  w.AddStringArray("none", {});
  auto file = GgufFile::FromBuffer(w.Finish());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;

  EXPECT_EQ(*f.GetStringArray("tokens"), tokens);
  EXPECT_EQ(*f.GetFloatArray("scores"), (std::vector<float>{0.5f, -1.0f, 3.25f}));
  EXPECT_EQ(f.GetFloatArray("f64s")->at(1), -0.5f);
  EXPECT_EQ(*f.GetIntArray("types"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(*f.GetFloatArray("types"), (std::vector<float>{1, -2, 3}));
  EXPECT_EQ(*f.GetIntArray("u32s"), (std::vector<int64_t>{4000000000}));
  EXPECT_EQ(*f.GetIntArray("i64s"),
            (std::vector<int64_t>{-5, std::numeric_limits<int64_t>::max()}));
  EXPECT_EQ(*f.GetIntArray("u8s"), (std::vector<int64_t>{0, 255}));
  EXPECT_TRUE(f.GetStringArray("none")->empty());
  EXPECT_EQ(*f.ArraySize("tokens"), 4u);
  EXPECT_EQ(*f.ArraySize("bools"), 3u);
  EXPECT_EQ(*f.ArrayTypeOf("tokens"), GgufValueType::kString);
  EXPECT_EQ(*f.ArrayTypeOf("bools"), GgufValueType::kBool);
  EXPECT_EQ(*f.TypeOf("scores"), GgufValueType::kArray);

  absl::Status s = f.GetIntArray("scores").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("array of float32"));
  EXPECT_EQ(f.GetFloatArray("tokens").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetIntArray("bools").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GgufTest, TensorsRoundTrip) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  w.AddTensorF32("a", {3, 2}, a);
  // Q4_1: 20 bytes per block of 32; a 64 x 3 matrix takes 2 * 20 * 3 bytes.
  std::string q(kernels::RowBytes(GgmlType::kQ4_1, 64) * 3, '\0');
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<char>(i * 7);
  w.AddTensor("blk.0.q", GgmlType::kQ4_1, {64, 3}, q);
  std::string q8(kernels::RowBytes(GgmlType::kQ8_0, 32) * 2 * 2 * 2, 'x');
  w.AddTensor("four_d", GgmlType::kQ8_0, {32, 2, 2, 2}, q8);
  auto file = GgufFile::FromBuffer(w.Finish());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.data_offset() % 32, 0u);

  const GgufTensorInfo* ta = f.FindTensor("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->type, GgmlType::kF32);
  EXPECT_EQ(ta->dims, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(ta->nbytes, 24u);
  EXPECT_EQ(ta->offset, 0u);
  EXPECT_EQ(std::memcmp(ta->data, a.data(), 24), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ta->data) % 32, 0u);

  const GgufTensorInfo* tq = f.FindTensor("blk.0.q");
  ASSERT_NE(tq, nullptr);
  EXPECT_EQ(tq->type, GgmlType::kQ4_1);
  EXPECT_EQ(tq->nbytes, 120u);
  EXPECT_EQ(tq->offset, 32u);
  EXPECT_EQ(std::string(static_cast<const char*>(tq->data), tq->nbytes), q);

  const GgufTensorInfo* t4 = f.FindTensor("four_d");
  ASSERT_NE(t4, nullptr);
  EXPECT_EQ(t4->dims.size(), 4u);
  EXPECT_EQ(t4->nbytes, q8.size());
  EXPECT_EQ(t4->offset % 32, 0u);
  EXPECT_EQ(std::string(static_cast<const char*>(t4->data), t4->nbytes), q8);

  EXPECT_EQ(f.FindTensor("missing"), nullptr);
  EXPECT_EQ(f.tensors()[0].name, "a");
  EXPECT_EQ(f.tensors()[2].name, "four_d");
}

TEST(GgufTest, CustomAlignment) {
  GgufWriter w;
  w.SetAlignment(128);
  w.AddTensorF32("a", {3}, {1, 2, 3});
  w.AddTensorF32("b", {5}, {1, 2, 3, 4, 5});
  std::string bytes = w.Finish();
  auto file = GgufFile::FromBuffer(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->alignment(), 128u);
  EXPECT_EQ((*file)->data_offset() % 128, 0u);
  EXPECT_EQ((*file)->FindTensor("b")->offset, 128u);
  EXPECT_EQ(*(*file)->GetUint("general.alignment"), 128u);
}

TEST(GgufTest, Version2Accepted) {
  GgufWriter w = SmallWriter();
  w.SetVersion(2);
  auto file = GgufFile::FromBuffer(w.Finish());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 2u);
}

TEST(GgufTest, WriteFileThenOpen) {
  std::string path = ::testing::TempDir() + "/gguf_test_roundtrip.gguf";
  GgufWriter w = SmallWriter();
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->file_size(), w.Finish().size());
  EXPECT_EQ(*(*file)->GetString("general.architecture"), "llama");
  const GgufTensorInfo* b = (*file)->FindTensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(static_cast<const float*>(b->data)[7], 2.0f);
  std::remove(path.c_str());
}

TEST(GgufTest, OpenErrorsNamePath) {
  absl::Status s = GgufFile::Open("/nonexistent/dir/model.gguf").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("/nonexistent/dir/model.gguf"));

  s = GgufFile::Open(::testing::TempDir()).status();
  EXPECT_FALSE(s.ok());

  std::string empty = ::testing::TempDir() + "/gguf_test_empty.gguf";
  { std::ofstream(empty).flush(); }
  s = GgufFile::Open(empty).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(empty));
  std::remove(empty.c_str());

  std::string bad = ::testing::TempDir() + "/gguf_test_bad.gguf";
  std::string bytes = SmallWriter().Finish();
  bytes.resize(bytes.size() - 40);
  { std::ofstream(bad, std::ios::binary) << bytes; }
  s = GgufFile::Open(bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(bad));
  EXPECT_THAT(std::string(s.message()), HasSubstr("runs past the end"));
  std::remove(bad.c_str());
}

// ---- header validation ----------------------------------------------------------------------

TEST(GgufValidationTest, BadMagic) {
  std::string bytes = SmallWriter().Finish();
  bytes[0] = 'X';
  ExpectInvalid(bytes, {"magic", "offset 0"});
  ExpectInvalid("", {"truncated"});
  ExpectInvalid("GG", {"truncated"});
}

TEST(GgufValidationTest, Versions) {
  GgufWriter w = SmallWriter();
  w.SetVersion(1);
  ExpectInvalid(w.Finish(), {"version 1 is not supported"});
  w.SetVersion(4);
  ExpectInvalid(w.Finish(), {"unsupported GGUF version 4"});
  w.SetVersion(0x03000000);  // a big-endian v3 file read as little-endian.
  ExpectInvalid(w.Finish(), {"big-endian"});
}

TEST(GgufValidationTest, LyingCounts) {
  std::string good = SmallWriter().Finish();
  std::string bytes = good;
  Patch<uint64_t>(&bytes, 16, uint64_t{1} << 60);
  ExpectInvalid(bytes, {"key-value count", "offset 16"});
  bytes = good;
  Patch<uint64_t>(&bytes, 8, std::numeric_limits<uint64_t>::max());
  ExpectInvalid(bytes, {"tensor count", "offset 8"});
  // Counts that fit the file size but are still wrong run into the next structures.
  bytes = good;
  Patch<uint64_t>(&bytes, 16, 3);
  EXPECT_FALSE(OpenStatus(bytes).ok());
  bytes = good;
  Patch<uint64_t>(&bytes, 8, 3);
  EXPECT_FALSE(OpenStatus(bytes).ok());
}

TEST(GgufValidationTest, StringLengthsWithinFile) {
  std::string good = SmallWriter().Finish();
  // The first key's length prefix is at byte 24.
  std::string bytes = good;
  Patch<uint64_t>(&bytes, 24, uint64_t{1} << 62);
  ExpectInvalid(bytes, {"offset 24", "runs past the end"});
  bytes = good;
  Patch<uint64_t>(&bytes, 24, good.size());
  ExpectInvalid(bytes, {"offset 24"});
  // The value string's length prefix follows key (8 + 20 bytes) and type (4).
  bytes = good;
  size_t value_at = 24 + 8 + std::strlen("general.architecture") + 4;
  Patch<uint64_t>(&bytes, value_at, std::numeric_limits<uint64_t>::max());
  ExpectInvalid(bytes, {"general.architecture", "offset " + std::to_string(value_at)});
  // A tensor name length.
  bytes = good;
  size_t name_at = good.find(GgufString("b"));
  Patch<uint64_t>(&bytes, name_at, uint64_t{1} << 40);
  ExpectInvalid(bytes, {"name of tensor #1", "offset " + std::to_string(name_at)});
}

TEST(GgufValidationTest, EmptyAndDuplicateKeys) {
  GgufWriter w;
  w.AddUint32("", 1);
  ExpectInvalid(w.Finish(), {"empty key"});
  GgufWriter d;
  d.AddUint32("k", 1);
  d.AddString("k", "again");
  ExpectInvalid(d.Finish(), {"duplicate key 'k'"});
}

TEST(GgufValidationTest, ValueTypes) {
  GgufWriter w;
  w.AddRawKv("weird", 13, Bytes<uint32_t>(0));
  ExpectInvalid(w.Finish(), {"type of key 'weird'", "13"});

  GgufWriter e;
  e.AddRawKv("arr", 9, Bytes<uint32_t>(99) + Bytes<uint64_t>(0));
  ExpectInvalid(e.Finish(), {"element type of key 'arr'", "99"});

  GgufWriter b;
  b.AddRawKv("flag", 7, std::string(1, '\x02'));
  ExpectInvalid(b.Finish(), {"flag", "bool"});

  GgufWriter ba;
  ba.AddRawKv("flags", 9, Bytes<uint32_t>(7) + Bytes<uint64_t>(3) + std::string("\x01\x00\x05", 3));
  ExpectInvalid(ba.Finish(), {"element 2 of array 'flags'"});
}

TEST(GgufValidationTest, NestedArraysRejected) {
  GgufWriter w;
  std::string inner =
      Bytes<uint32_t>(4) + Bytes<uint64_t>(2) + Bytes<uint32_t>(1) + Bytes<uint32_t>(2);
  w.AddRawKv("nested", 9, Bytes<uint32_t>(9) + Bytes<uint64_t>(1) + inner);
  ExpectInvalid(w.Finish(), {"nested", "'nested'"});
}

TEST(GgufValidationTest, LyingArrayLengths) {
  GgufWriter w;
  w.AddRawKv("big", 9, Bytes<uint32_t>(4) + Bytes<uint64_t>(uint64_t{1} << 61));
  ExpectInvalid(w.Finish(), {"array 'big' claims"});

  GgufWriter s;
  s.AddRawKv("strs", 9, Bytes<uint32_t>(8) + Bytes<uint64_t>(uint64_t{1} << 40));
  ExpectInvalid(s.Finish(), {"array 'strs' claims"});

  // A count that fits the remaining bytes but whose strings do not.
  GgufWriter t;
  t.AddRawKv(
      "strs", 9,
      Bytes<uint32_t>(8) + Bytes<uint64_t>(2) + GgufString("ok") + Bytes<uint64_t>(1000) + "short");
  ExpectInvalid(t.Finish(), {"element 1 of array 'strs'"});
}

TEST(GgufValidationTest, Alignment) {
  for (uint32_t bad : {0u, 3u, 48u}) {
    GgufWriter w;
    w.AddUint32("general.alignment", bad);
    w.AddTensorF32("a", {8}, std::vector<float>(8, 0.0f));
    ExpectInvalid(w.Finish(), {"general.alignment", std::to_string(bad)});
  }
  GgufWriter s;
  s.AddString("general.alignment", "32");
  ExpectInvalid(s.Finish(), {"general.alignment", "string"});
  GgufWriter neg;
  neg.AddInt32("general.alignment", -32);
  ExpectInvalid(neg.Finish(), {"general.alignment"});
}

// ---- tensor validation ----------------------------------------------------------------------

TEST(GgufValidationTest, DuplicateTensorNames) {
  GgufWriter w;
  w.AddTensorF32("t", {8}, std::vector<float>(8));
  w.AddTensorF32("t", {8}, std::vector<float>(8));
  ExpectInvalid(w.Finish(), {"duplicate tensor name 't'"});
}

TEST(GgufValidationTest, EmptyTensorName) {
  GgufWriter w;
  w.AddTensorF32("", {8}, std::vector<float>(8));
  ExpectInvalid(w.Finish(), {"empty name"});
}

TEST(GgufValidationTest, DimensionCount) {
  GgufWriter zero;
  zero.AddTensor("t", GgmlType::kF32, {}, "");
  ExpectInvalid(zero.Finish(), {"'t'", "0 dimensions"});
  GgufWriter five;
  five.AddTensor("t", GgmlType::kF32, {1, 1, 1, 1, 1}, std::string(4, '\0'));
  ExpectInvalid(five.Finish(), {"'t'", "5 dimensions"});
}

TEST(GgufValidationTest, DimensionValues) {
  GgufWriter zero;
  zero.AddTensor("t", GgmlType::kF32, {4, 0}, "");
  ExpectInvalid(zero.Finish(), {"'t'", "dimension 1 is 0"});
  GgufWriter neg;
  neg.AddTensor("t", GgmlType::kF32, {-1}, "");
  ExpectInvalid(neg.Finish(), {"'t'", "dimension 0"});
  GgufWriter overflow;
  overflow.AddTensor("t", GgmlType::kF32, {int64_t{1} << 40, int64_t{1} << 40}, "");
  ExpectInvalid(overflow.Finish(), {"'t'", "2^63-1 elements"});
  // Elements fit in int64 but bytes do not fit in size_t.
  GgufWriter bytes;
  bytes.AddTensor("t", GgmlType::kF64, {int64_t{1} << 31, int64_t{1} << 31}, "");
  ExpectInvalid(bytes.Finish(), {"'t'", "overflows"});
}

TEST(GgufValidationTest, BlockSizeMultiple) {
  GgufWriter w;
  w.AddTensor("q", GgmlType::kQ4_1, {33, 2}, std::string(80, '\0'));
  ExpectInvalid(w.Finish(), {"'q'", "33", "q4_1", "block size 32"});
  GgufWriter k;
  k.AddTensor("k", GgmlType::kQ4_K, {128}, std::string(144, '\0'));
  ExpectInvalid(k.Finish(), {"'k'", "block size 256"});
}

TEST(GgufValidationTest, UnknownTensorType) {
  for (uint32_t id : {4u, 5u, 19u, 39u, 1000u}) {
    GgufWriter w;
    w.AddTensor("t", static_cast<GgmlType>(id), {32}, std::string(64, '\0'));
    ExpectInvalid(w.Finish(), {"'t'", "ggml type id " + std::to_string(id)});
  }
}

TEST(GgufValidationTest, MisalignedOffset) {
  std::string bytes = SmallWriter().Finish();
  Patch<uint64_t>(&bytes, TensorOffsetField(bytes, "b", 2), 33);
  ExpectInvalid(bytes, {"'b'", "offset 33", "alignment 32"});
}

TEST(GgufValidationTest, TensorDataOutsideFile) {
  std::string good = SmallWriter().Finish();
  std::string bytes = good;
  Patch<uint64_t>(&bytes, TensorOffsetField(bytes, "b", 2), uint64_t{1} << 62);
  ExpectInvalid(bytes, {"'b'", "past the end of the data section"});
  bytes = good;
  Patch<uint64_t>(&bytes, TensorOffsetField(bytes, "b", 2),
                  std::numeric_limits<uint64_t>::max() - 31);
  ExpectInvalid(bytes, {"'b'"});
  // Too few data bytes for the shape.
  GgufWriter w;
  w.AddTensorF32("short", {64}, std::vector<float>(8));
  ExpectInvalid(w.Finish(), {"'short'", "past the end"});
  // The header ends where the data section should start.
  // The header is complete but the file ends before the aligned start of the data section.
  bytes = good;
  size_t b_info_end = bytes.find(GgufString("b")) + 8 + 1 + 4 + 16 + 4 + 8;
  ASSERT_NE(b_info_end % 32, 0u);
  bytes.resize(b_info_end + 1);
  ExpectInvalid(bytes, {"data section would start"});
}

TEST(GgufValidationTest, OverlappingTensors) {
  std::string bytes = SmallWriter().Finish();
  Patch<uint64_t>(&bytes, TensorOffsetField(bytes, "b", 2), 0);
  ExpectInvalid(bytes, {"overlaps", "'a'", "'b'"});

  GgufWriter w;
  w.AddTensorF32("big", {32}, std::vector<float>(32));
  w.AddTensorF32("small", {4}, std::vector<float>(4));
  std::string b2 = w.Finish();
  Patch<uint64_t>(&b2, TensorOffsetField(b2, "small", 1), 64);  // inside big's [0, 128).
  ExpectInvalid(b2, {"overlaps"});
}

TEST(GgufValidationTest, EveryTruncationOfASmallFile) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", {"a", "bb", "ccc"});
  w.AddFloatArray("scores", {1, 2, 3});
  w.AddBool("flag", true);
  w.AddTensorF32("a", {8}, std::vector<float>(8, 1.0f));
  w.AddTensor("q", GgmlType::kQ8_0, {32, 2}, std::string(68, '\x11'));
  std::string bytes = w.Finish();
  auto full = GgufFile::FromBuffer(bytes);
  ASSERT_TRUE(full.ok()) << full.status();
  const GgufTensorInfo* q = (*full)->FindTensor("q");
  size_t data_end = (*full)->data_offset() + q->offset + q->nbytes;
  for (size_t len = 0; len < bytes.size(); ++len) {
    absl::Status s = OpenStatus(bytes.substr(0, len));
    if (len < data_end) {
      EXPECT_FALSE(s.ok()) << "cut at " << len;
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "cut at " << len;
    } else {
      EXPECT_TRUE(s.ok()) << "cut at " << len << " (only padding removed): " << s;
    }
  }
}

// ---- the reference model --------------------------------------------------------------------

TEST(GgufRealModelTest, OpensWithKnownLayout) {
  std::string path = ModelPath();
  if (!FileExists(path)) GTEST_SKIP() << "reference model not found (set CRESCENT_MODEL): " << path;
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), 1785664u);
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.Keys().size(), 33u);
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*f.GetString("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ(*f.GetUint("llama.block_count"), 30u);
  EXPECT_EQ(*f.GetFloat("llama.rope.freq_base"), 100000.0);
  EXPECT_FALSE(*f.GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_THAT(*f.GetString("tokenizer.chat_template"), HasSubstr("<|im_start|>"));

  auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 49152u);
  EXPECT_EQ((*tokens)[*f.GetUint("tokenizer.ggml.eos_token_id")], "<|im_end|>");
  EXPECT_EQ(*f.ArraySize("tokenizer.ggml.merges"), 48900u);
  auto types = f.GetIntArray("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok()) << types.status();
  EXPECT_EQ(types->size(), 49152u);

  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, GgmlType::kQ8_0);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd->nbytes, 30081024u);
  EXPECT_EQ(f.FindTensor("output.weight"), nullptr);
  const GgufTensorInfo* q = f.FindTensor("blk.29.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, GgmlType::kQ4_1);
  EXPECT_EQ(q->dims, (std::vector<int64_t>{576, 576}));
  size_t total = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    total += t.nbytes;
    EXPECT_LE(f.data_offset() + t.offset + t.nbytes, f.file_size()) << t.name;
  }
  EXPECT_LE(total, f.file_size() - f.data_offset());
}

TEST(GgufRealModelTest, TruncatedHeadersFailCleanly) {
  std::string path = ModelPath();
  if (!FileExists(path)) GTEST_SKIP() << "reference model not found (set CRESCENT_MODEL): " << path;
  constexpr size_t kPrefix = 4 << 20;
  std::string prefix(kPrefix, '\0');
  {
    std::ifstream in(path, std::ios::binary);
    in.read(prefix.data(), kPrefix);
    ASSERT_EQ(static_cast<size_t>(in.gcount()), kPrefix);
  }
  constexpr size_t kDataOffset = 1785664;  // where the header ends and tensor data begins.
  std::vector<size_t> cuts;
  for (size_t i = 0; i <= 256; ++i) cuts.push_back(i);
  for (size_t i = 0; i < 300; ++i) cuts.push_back(257 + i * (kPrefix - 257) / 300);
  for (size_t d = 0; d < 64; ++d) {
    cuts.push_back(kDataOffset - d);
    cuts.push_back(kDataOffset + d);
  }
  // An LCG keeps the run deterministic while probing unaligned cut points throughout the header.
  uint64_t x = 12345;
  for (int i = 0; i < 200; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    cuts.push_back((x >> 20) % kDataOffset);
  }
  cuts.push_back(kPrefix);
  for (size_t len : cuts) {
    absl::Status s = OpenStatus(prefix.substr(0, len));
    ASSERT_FALSE(s.ok()) << "cut at " << len;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "cut at " << len << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("byte offset")) << s;
  }
}

}  // namespace
}  // namespace crescent::model
