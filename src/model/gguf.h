// GgufFile: a validated, read-only view of a GGUF (v2/v3) model file.
//
// Layout (all little-endian):
//   "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x  { string key | u32 value_type | value }
//   tensor_count x { string name | u32 n_dims | u64 dims[n_dims] | u32 ggml_type | u64 offset }
//   padding to `alignment` | data section (tensor offsets are relative to its start)
// where a string is { u64 length | bytes } and an array value is
// { u32 element_type | u64 count | elements }.
//
// Every structural check happens in Open()/FromBuffer(): once a GgufFile exists, every key,
// string, array and tensor it reports lies inside the file, so the getters below never read out
// of bounds and tensor data pointers may be dereferenced for `nbytes` bytes.
#ifndef CRESCENT_SRC_MODEL_GGUF_H_
#define CRESCENT_SRC_MODEL_GGUF_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/types.h"

namespace crescent::model {

// Metadata value types; values are GGUF's on-disk ids, never renumber.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "uint32", "string", ...; "type#<id>" for an id outside the enum. Pure; thread-safe.
std::string GgufValueTypeName(GgufValueType type);

// Bytes one value of a fixed-size type takes on disk; 0 for kString, kArray and unknown ids.
size_t GgufValueTypeSize(GgufValueType type);

// The default alignment of the data section and of every tensor, when general.alignment is
// absent.
inline constexpr size_t kGgufDefaultAlignment = 32;

struct GgufTensorInfo {
  std::string name;
  kernels::GgmlType type;
  std::vector<int64_t> dims;  // ne[0] first = innermost (row length); 1 to 4 entries, all > 0.
  uint64_t offset;            // relative to the data section; a multiple of the alignment.
  size_t nbytes;              // bytes of data: dims[0] / block_size * type_size * dims[1] * ...
  const void* data;           // into the file's bytes; valid while the GgufFile lives.
};

class GgufFile {
 public:
  // Maps the file at `path` read-only and validates it (see the file comment). The mapping lives
  // as long as the returned object.
  // Errors: NotFound / PermissionDenied / ... when the file cannot be opened or mapped (naming the
  // path); InvalidArgument naming the problem and its byte offset when the file is not a valid
  // GGUF v2/v3 file.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);

  // Same as Open() on bytes held in memory: the GgufFile takes ownership (copying them into a
  // 64-byte-aligned buffer so that tensor data is as aligned as in a mapped file). Used by tests
  // and fuzzing. Errors: InvalidArgument as for Open().
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBuffer(std::string bytes);

  // The bytes behind a file (a mapping or an owned buffer); defined in gguf.cc.
  class Storage;

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  // All accessors are const and thread-safe.

  uint32_t version() const { return version_; }
  size_t file_size() const { return size_; }
  // general.alignment, or kGgufDefaultAlignment when absent. A power of two.
  size_t alignment() const { return alignment_; }
  // Byte offset of the data section from the start of the file.
  size_t data_offset() const { return data_offset_; }

  bool Has(std::string_view key) const;
  // The key's value type (kArray for arrays). NotFound naming the key when absent.
  absl::StatusOr<GgufValueType> TypeOf(std::string_view key) const;
  // For an array: its element type and its length. NotFound when absent; InvalidArgument naming
  // the key and its type when it is not an array.
  absl::StatusOr<GgufValueType> ArrayTypeOf(std::string_view key) const;
  absl::StatusOr<uint64_t> ArraySize(std::string_view key) const;

  // Scalar getters. Each returns NotFound naming the key when it is absent and InvalidArgument
  // naming the key and its actual type when the type does not fit:
  //   GetString: kString only.
  //   GetUint:   any integer type; OutOfRange when the value is negative.
  //   GetInt:    any integer type; OutOfRange when a uint64 value exceeds INT64_MAX.
  //   GetFloat:  kFloat32, kFloat64 and any integer type.
  //   GetBool:   kBool only.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<uint64_t> GetUint(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;

  // Array getters, with the same errors; the element type must fit as for the scalar getters
  // (GetFloatArray takes float and integer elements; GetIntArray any integer elements, with
  // OutOfRange for a uint64 element above INT64_MAX).
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;

  // Every key, in file order.
  std::vector<std::string> Keys() const;

  // Every tensor, in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // The tensor named `name`, or nullptr when absent. The pointer lives as long as this object.
  const GgufTensorInfo* FindTensor(std::string_view name) const;

 private:
  // Where a key's value sits in the file. For a scalar `offset` is the value itself, for a
  // string its length prefix, for an array its first element.
  struct KvEntry {
    std::string key;
    GgufValueType type;
    GgufValueType element_type;  // arrays only.
    uint64_t count;              // arrays only.
    size_t offset;
  };
  class Parser;

  explicit GgufFile(std::unique_ptr<Storage> storage);
  static absl::StatusOr<std::unique_ptr<GgufFile>> Create(std::unique_ptr<Storage> storage);

  absl::StatusOr<const KvEntry*> Find(std::string_view key) const;
  absl::Status TypeError(const KvEntry& entry, std::string_view wanted) const;
  // Reads the integer / float of `type` at `offset`; REQUIRES: the type is an integer (float)
  // type and the bytes lie in the file (guaranteed by validation).
  absl::StatusOr<int64_t> ReadSigned(const KvEntry& entry, GgufValueType type, size_t offset) const;
  absl::StatusOr<uint64_t> ReadUnsigned(const KvEntry& entry, GgufValueType type,
                                        size_t offset) const;
  double ReadDouble(GgufValueType type, size_t offset) const;

  std::unique_ptr<Storage> storage_;
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  size_t alignment_ = kGgufDefaultAlignment;
  size_t data_offset_ = 0;
  std::vector<KvEntry> kvs_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace crescent::model

#endif  // CRESCENT_SRC_MODEL_GGUF_H_
