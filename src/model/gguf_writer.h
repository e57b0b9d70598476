// GgufWriter: builds a GGUF v3 file in memory, for tests, fuzzing and tiny synthetic models.
//
//   GgufWriter w;
//   w.AddString("general.architecture", "llama");
//   w.AddUint32("llama.block_count", 2);
//   w.AddTensorF32("output_norm.weight", {64}, std::vector<float>(64, 1.0f));
//   w.AddTensor("blk.0.attn_q.weight", kernels::GgmlType::kQ8_0, {64, 64}, q8_bytes);
//   std::string bytes = w.Finish();  // GgufFile::FromBuffer(bytes) reads it back.
//
// The writer is a faithful serializer, not a validator: it writes what it is given, in the order
// given (duplicate keys, odd dims or a tensor whose byte count does not match its shape are
// written as is), so that tests can build invalid files on purpose. GgufFile rejects those with
// a message naming the problem. Not thread-safe.
#ifndef CRESCENT_SRC_MODEL_GGUF_WRITER_H_
#define CRESCENT_SRC_MODEL_GGUF_WRITER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cpu/types.h"
#include "src/model/gguf.h"

namespace crescent::model {

class GgufWriter {
 public:
  GgufWriter() = default;

  // Version written in the header (default 3). Versions other than 2 and 3 only make sense for
  // tests of the reader's version check.
  void SetVersion(uint32_t version) { version_ = version; }

  // Adds "general.alignment" (uint32) at this point in the key list and pads the data section
  // and every tensor to `alignment` bytes. REQUIRES: alignment is a power of two.
  void SetAlignment(uint32_t alignment);

  // Scalars.
  void AddUint8(std::string_view key, uint8_t value);
  void AddInt8(std::string_view key, int8_t value);
  void AddUint16(std::string_view key, uint16_t value);
  void AddInt16(std::string_view key, int16_t value);
  void AddUint32(std::string_view key, uint32_t value);
  void AddInt32(std::string_view key, int32_t value);
  void AddUint64(std::string_view key, uint64_t value);
  void AddInt64(std::string_view key, int64_t value);
  void AddFloat32(std::string_view key, float value);
  void AddFloat64(std::string_view key, double value);
  void AddBool(std::string_view key, bool value);
  void AddString(std::string_view key, std::string_view value);

  // Arrays.
  void AddStringArray(std::string_view key, const std::vector<std::string>& values);
  void AddFloatArray(std::string_view key, const std::vector<float>& values);
  void AddFloat64Array(std::string_view key, const std::vector<double>& values);
  void AddInt32Array(std::string_view key, const std::vector<int32_t>& values);
  void AddUint32Array(std::string_view key, const std::vector<uint32_t>& values);
  void AddInt64Array(std::string_view key, const std::vector<int64_t>& values);
  void AddUint8Array(std::string_view key, const std::vector<uint8_t>& values);
  void AddBoolArray(std::string_view key, const std::vector<bool>& values);

  // Writes `key`, the type id `type` and then `payload` verbatim as the value, so that tests can
  // write values no typed Add* produces (nested arrays, unknown type ids, lying lengths).
  void AddRawKv(std::string_view key, uint32_t type, std::string_view payload);

  // Adds a tensor of `type` with shape `dims` (ne[0] first: dims[0] is the row length) whose
  // data is `bytes`, copied. For a valid file, bytes.size() must equal
  // dims[0] / block_size * type_size * dims[1] * ... (see kernels::RowBytes).
  void AddTensor(std::string_view name, kernels::GgmlType type, std::vector<int64_t> dims,
                 std::string_view bytes);
  // Same for an F32 tensor given as floats.
  void AddTensorF32(std::string_view name, std::vector<int64_t> dims,
                    const std::vector<float>& values);

  size_t kv_count() const { return kv_count_; }
  size_t tensor_count() const { return tensors_.size(); }

  // Returns the whole file: header, key-value pairs, tensor descriptions, then the data section
  // with each tensor at the next multiple of the alignment. May be called more than once.
  std::string Finish() const;

  // Writes Finish() to `path`, replacing any file there. Errors: from open/write, naming the path.
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<int64_t> dims;
    std::string bytes;
  };

  void BeginKv(std::string_view key, GgufValueType type);
  void BeginArray(std::string_view key, GgufValueType element_type, uint64_t count);
  template <typename T>
  void Put(T value);
  void PutString(std::string_view s);

  uint32_t version_ = 3;
  size_t alignment_ = kGgufDefaultAlignment;
  size_t kv_count_ = 0;
  std::string kv_bytes_;  // The serialized key-value pairs, in order.
  std::vector<Tensor> tensors_;
};

}  // namespace crescent::model

#endif  // CRESCENT_SRC_MODEL_GGUF_WRITER_H_
