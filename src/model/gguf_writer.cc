#include "src/model/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/status.h"

namespace crescent::model {

namespace {

template <typename T>
void Append(std::string* out, T value) {
  char buf[sizeof(T)];
  std::memcpy(buf, &value, sizeof(T));
  out->append(buf, sizeof(T));
}

void AppendString(std::string* out, std::string_view s) {
  Append<uint64_t>(out, s.size());
  out->append(s.data(), s.size());
}

void PadTo(std::string* out, size_t alignment) {
  size_t rem = out->size() % alignment;
  if (rem != 0) out->append(alignment - rem, '\0');
}

}  // namespace

template <typename T>
void GgufWriter::Put(T value) {
  Append<T>(&kv_bytes_, value);
}

void GgufWriter::PutString(std::string_view s) { AppendString(&kv_bytes_, s); }

void GgufWriter::BeginKv(std::string_view key, GgufValueType type) {
  PutString(key);
  Put<uint32_t>(static_cast<uint32_t>(type));
  ++kv_count_;
}

void GgufWriter::BeginArray(std::string_view key, GgufValueType element_type, uint64_t count) {
  BeginKv(key, GgufValueType::kArray);
  Put<uint32_t>(static_cast<uint32_t>(element_type));
  Put<uint64_t>(count);
}

void GgufWriter::SetAlignment(uint32_t alignment) {
  assert(alignment != 0 && std::has_single_bit(alignment));
  alignment_ = alignment;
  AddUint32("general.alignment", alignment);
}

void GgufWriter::AddUint8(std::string_view key, uint8_t value) {
  BeginKv(key, GgufValueType::kUint8);
  Put(value);
}
void GgufWriter::AddInt8(std::string_view key, int8_t value) {
  BeginKv(key, GgufValueType::kInt8);
  Put(value);
}
void GgufWriter::AddUint16(std::string_view key, uint16_t value) {
  BeginKv(key, GgufValueType::kUint16);
  Put(value);
}
void GgufWriter::AddInt16(std::string_view key, int16_t value) {
  BeginKv(key, GgufValueType::kInt16);
  Put(value);
}
void GgufWriter::AddUint32(std::string_view key, uint32_t value) {
  BeginKv(key, GgufValueType::kUint32);
  Put(value);
}
void GgufWriter::AddInt32(std::string_view key, int32_t value) {
  BeginKv(key, GgufValueType::kInt32);
  Put(value);
}
void GgufWriter::AddUint64(std::string_view key, uint64_t value) {
  BeginKv(key, GgufValueType::kUint64);
  Put(value);
}
void GgufWriter::AddInt64(std::string_view key, int64_t value) {
  BeginKv(key, GgufValueType::kInt64);
  Put(value);
}
void GgufWriter::AddFloat32(std::string_view key, float value) {
  BeginKv(key, GgufValueType::kFloat32);
  Put(value);
}
void GgufWriter::AddFloat64(std::string_view key, double value) {
  BeginKv(key, GgufValueType::kFloat64);
  Put(value);
}
void GgufWriter::AddBool(std::string_view key, bool value) {
  BeginKv(key, GgufValueType::kBool);
  Put<uint8_t>(value ? 1 : 0);
}
void GgufWriter::AddString(std::string_view key, std::string_view value) {
  BeginKv(key, GgufValueType::kString);
  PutString(value);
}

void GgufWriter::AddStringArray(std::string_view key, const std::vector<std::string>& values) {
  BeginArray(key, GgufValueType::kString, values.size());
  for (const std::string& v : values) PutString(v);
}
void GgufWriter::AddFloatArray(std::string_view key, const std::vector<float>& values) {
  BeginArray(key, GgufValueType::kFloat32, values.size());
  for (float v : values) Put(v);
}
void GgufWriter::AddFloat64Array(std::string_view key, const std::vector<double>& values) {
  BeginArray(key, GgufValueType::kFloat64, values.size());
  for (double v : values) Put(v);
}
void GgufWriter::AddInt32Array(std::string_view key, const std::vector<int32_t>& values) {
  BeginArray(key, GgufValueType::kInt32, values.size());
  for (int32_t v : values) Put(v);
}
void GgufWriter::AddUint32Array(std::string_view key, const std::vector<uint32_t>& values) {
  BeginArray(key, GgufValueType::kUint32, values.size());
  for (uint32_t v : values) Put(v);
}
void GgufWriter::AddInt64Array(std::string_view key, const std::vector<int64_t>& values) {
  BeginArray(key, GgufValueType::kInt64, values.size());
  for (int64_t v : values) Put(v);
}
void GgufWriter::AddUint8Array(std::string_view key, const std::vector<uint8_t>& values) {
  BeginArray(key, GgufValueType::kUint8, values.size());
  for (uint8_t v : values) Put(v);
}
void GgufWriter::AddBoolArray(std::string_view key, const std::vector<bool>& values) {
  BeginArray(key, GgufValueType::kBool, values.size());
  for (bool v : values) Put<uint8_t>(v ? 1 : 0);
}

void GgufWriter::AddRawKv(std::string_view key, uint32_t type, std::string_view payload) {
  PutString(key);
  Put<uint32_t>(type);
  kv_bytes_.append(payload.data(), payload.size());
  ++kv_count_;
}

void GgufWriter::AddTensor(std::string_view name, kernels::GgmlType type, std::vector<int64_t> dims,
                           std::string_view bytes) {
  tensors_.push_back(
      Tensor{std::string(name), static_cast<uint32_t>(type), std::move(dims), std::string(bytes)});
}

void GgufWriter::AddTensorF32(std::string_view name, std::vector<int64_t> dims,
                              const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  AddTensor(name, kernels::GgmlType::kF32, std::move(dims), bytes);
}

std::string GgufWriter::Finish() const {
  std::string out;
  Append<uint32_t>(&out, 0x46554747);  // "GGUF"
  Append<uint32_t>(&out, version_);
  Append<uint64_t>(&out, tensors_.size());
  Append<uint64_t>(&out, kv_count_);
  out += kv_bytes_;
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    AppendString(&out, t.name);
    Append<uint32_t>(&out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Append<uint64_t>(&out, static_cast<uint64_t>(d));
    Append<uint32_t>(&out, t.type);
    Append<uint64_t>(&out, offset);
    offset += t.bytes.size();
    if (offset % alignment_ != 0) offset += alignment_ - offset % alignment_;
  }
  PadTo(&out, alignment_);
  for (const Tensor& t : tensors_) {
    out += t.bytes;
    PadTo(&out, alignment_);  // The data section starts aligned, so this aligns offsets too.
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  std::string bytes = Finish();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("creating GGUF file ", path));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, absl::StrCat("writing GGUF file ", path));
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return ErrnoToStatus(errno, absl::StrCat("closing GGUF file ", path));
  return absl::OkStatus();
}

}  // namespace crescent::model
