#include "src/model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "src/common/status.h"

namespace crescent::model {

static_assert(std::endian::native == std::endian::little,
              "GGUF is read by reinterpreting little-endian bytes in place");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32.
// The fewest bytes one key-value pair / one tensor description can take; bounds the counts in the
// header by what the rest of the file could hold before anything is allocated for them.
constexpr size_t kMinKvBytes = 8 + 1 + 4 + 1;                  // non-empty key, type, 1-byte value.
constexpr size_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // non-empty name, 1 dim.
constexpr uint32_t kMaxDims = 4;
constexpr uint32_t kMaxValueType = static_cast<uint32_t>(GgufValueType::kFloat64);

bool IsInteger(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsFloat(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string Quote(std::string_view s) {
  // Keys and names come from untrusted bytes: keep messages printable and short.
  std::string out = "'";
  size_t n = std::min<size_t>(s.size(), 96);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    }
  }
  if (n < s.size()) out += "...";
  out += "'";
  return out;
}

}  // namespace

std::string GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
      return "uint8";
    case GgufValueType::kInt8:
      return "int8";
    case GgufValueType::kUint16:
      return "uint16";
    case GgufValueType::kInt16:
      return "int16";
    case GgufValueType::kUint32:
      return "uint32";
    case GgufValueType::kInt32:
      return "int32";
    case GgufValueType::kFloat32:
      return "float32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kUint64:
      return "uint64";
    case GgufValueType::kInt64:
      return "int64";
    case GgufValueType::kFloat64:
      return "float64";
  }
  return absl::StrCat("type#", static_cast<uint32_t>(type));
}

size_t GgufValueTypeSize(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Storage: the bytes behind a GgufFile, either a read-only mapping or an owned aligned buffer.

class GgufFile::Storage {
 public:
  virtual ~Storage() = default;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 protected:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

namespace {

class BufferStorage final : public GgufFile::Storage {
 public:
  explicit BufferStorage(std::string_view bytes) {
    // Allocated at exactly bytes.size() (at least 1) so that AddressSanitizer catches a read
    // one past the end; 64-byte alignment matches what a page-aligned mapping gives tensors.
    buffer_ = static_cast<uint8_t*>(
        ::operator new (std::max<size_t>(bytes.size(), 1), std::align_val_t{64}));
    if (!bytes.empty()) std::memcpy(buffer_, bytes.data(), bytes.size());
    data_ = buffer_;
    size_ = bytes.size();
  }
  ~BufferStorage() override { ::operator delete (buffer_, std::align_val_t{64}); }
  BufferStorage(const BufferStorage&) = delete;
  BufferStorage& operator=(const BufferStorage&) = delete;

 private:
  uint8_t* buffer_;
};

class MmapStorage final : public GgufFile::Storage {
 public:
  MmapStorage(void* addr, size_t size) {
    data_ = static_cast<const uint8_t*>(addr);
    size_ = size;
  }
  ~MmapStorage() override { ::munmap(const_cast<uint8_t*>(data_), size_); }
  MmapStorage(const MmapStorage&) = delete;
  MmapStorage& operator=(const MmapStorage&) = delete;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Parser: one pass over the header that checks every rule and fills in the GgufFile.

class GgufFile::Parser {
 public:
  explicit Parser(GgufFile* file) : file_(file), bytes_(file->bytes_), size_(file->size_) {}

  absl::Status Parse() {
    CRESCENT_RETURN_IF_ERROR(ParseHeader());
    for (uint64_t i = 0; i < kv_count_; ++i) CRESCENT_RETURN_IF_ERROR(ParseKv(i));
    CRESCENT_RETURN_IF_ERROR(ReadAlignment());
    if (tensor_count_ > Remaining() / kMinTensorInfoBytes) {
      return Error(tensor_count_offset_,
                   absl::StrCat("tensor count ", tensor_count_, " cannot fit in the ", Remaining(),
                                " bytes left after the metadata"));
    }
    // Reserve only a little up front: even a count that fits the file could ask for several
    // times the file's size in bookkeeping before the descriptions prove it true.
    file_->tensors_.reserve(std::min<uint64_t>(tensor_count_, 4096));
    for (uint64_t i = 0; i < tensor_count_; ++i) CRESCENT_RETURN_IF_ERROR(ParseTensorInfo(i));
    return PlaceData();
  }

 private:
  size_t Remaining() const { return size_ - pos_; }

  static absl::Status Error(size_t offset, std::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid GGUF at byte offset ", offset, ": ", std::string(what)));
  }

  absl::Status Need(size_t n, std::string_view what) const {
    if (n > Remaining()) {
      return Error(pos_, absl::StrCat("truncated: ", std::string(what), " needs ", n,
                                      " bytes but the file ends after ", Remaining()));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    CRESCENT_RETURN_IF_ERROR(Need(sizeof(T), what));
    T v = Load<T>(bytes_ + pos_);
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<std::string_view> ReadString(std::string_view what) {
    size_t at = pos_;
    CRESCENT_ASSIGN_OR_RETURN(uint64_t len,
                              Read<uint64_t>(absl::StrCat(std::string(what), " length")));
    if (len > Remaining()) {
      return Error(at, absl::StrCat(std::string(what), " length ", len, " runs past the end of ",
                                    "the file (", Remaining(), " bytes left)"));
    }
    std::string_view s(reinterpret_cast<const char*>(bytes_ + pos_), len);
    pos_ += len;
    return s;
  }

  absl::Status ParseHeader() {
    if (size_ < 4) return Error(0, absl::StrCat("truncated: file has ", size_, " bytes, no magic"));
    if (Load<uint32_t>(bytes_) != kMagic) {
      return Error(0,
                   absl::StrCat("bad magic ",
                                Quote(std::string_view(reinterpret_cast<const char*>(bytes_), 4)),
                                ", expected 'GGUF'"));
    }
    pos_ = 4;
    CRESCENT_ASSIGN_OR_RETURN(uint32_t version, Read<uint32_t>("version"));
    if (version == 1) {
      return Error(4,
                   "GGUF version 1 is not supported (it used 32-bit counts); re-convert the "
                   "model to GGUF v3");
    }
    if (version != 2 && version != 3) {
      std::string hint = (version & 0xffff) == 0 ? " (a big-endian file?)" : "";
      return Error(4, absl::StrCat("unsupported GGUF version ", version, hint,
                                   "; only versions 2 and 3 are supported"));
    }
    file_->version_ = version;
    tensor_count_offset_ = pos_;
    CRESCENT_ASSIGN_OR_RETURN(tensor_count_, Read<uint64_t>("tensor count"));
    size_t kv_count_offset = pos_;
    CRESCENT_ASSIGN_OR_RETURN(kv_count_, Read<uint64_t>("key-value count"));
    // A cheap early bound so that lying counts fail before any allocation; the tensor count is
    // checked again, exactly, once the metadata has been read.
    if (kv_count_ > Remaining() / kMinKvBytes) {
      return Error(kv_count_offset, absl::StrCat("key-value count ", kv_count_, " cannot fit in ",
                                                 "the ", Remaining(), " bytes after the header"));
    }
    if (tensor_count_ > Remaining() / kMinTensorInfoBytes) {
      return Error(tensor_count_offset_,
                   absl::StrCat("tensor count ", tensor_count_, " cannot fit in the ", Remaining(),
                                " bytes after the header"));
    }
    file_->kvs_.reserve(std::min<uint64_t>(kv_count_, 256));
    return absl::OkStatus();
  }

  absl::StatusOr<GgufValueType> ReadValueType(std::string_view what) {
    size_t at = pos_;
    CRESCENT_ASSIGN_OR_RETURN(uint32_t raw, Read<uint32_t>(what));
    if (raw > kMaxValueType) {
      return Error(at, absl::StrCat(std::string(what), " ", raw, " is not a GGUF value type"));
    }
    return static_cast<GgufValueType>(raw);
  }

  // Skips (and checks) one value of a non-array type.
  absl::Status SkipScalar(GgufValueType type, std::string_view what) {
    if (type == GgufValueType::kString) return ReadString(what).status();
    size_t n = GgufValueTypeSize(type);
    CRESCENT_RETURN_IF_ERROR(Need(n, what));
    if (type == GgufValueType::kBool && bytes_[pos_] > 1) {
      return Error(pos_, absl::StrCat(std::string(what), " is a bool with byte value ",
                                      static_cast<int>(bytes_[pos_]), " (must be 0 or 1)"));
    }
    pos_ += n;
    return absl::OkStatus();
  }

  absl::Status ParseKv(uint64_t index) {
    size_t at = pos_;
    CRESCENT_ASSIGN_OR_RETURN(std::string_view key,
                              ReadString(absl::StrCat("key of key-value pair #", index)));
    if (key.empty()) return Error(at, absl::StrCat("key-value pair #", index, " has an empty key"));
    std::string what = absl::StrCat("value of key ", Quote(key));
    KvEntry entry{std::string(key), GgufValueType::kUint8, GgufValueType::kUint8, 0, 0};
    CRESCENT_ASSIGN_OR_RETURN(entry.type, ReadValueType(absl::StrCat("type of key ", Quote(key))));
    if (entry.type == GgufValueType::kArray) {
      size_t type_at = pos_;
      CRESCENT_ASSIGN_OR_RETURN(entry.element_type,
                                ReadValueType(absl::StrCat("element type of key ", Quote(key))));
      if (entry.element_type == GgufValueType::kArray) {
        return Error(type_at, absl::StrCat("key ", Quote(key), " is an array of arrays; nested ",
                                           "arrays are not supported"));
      }
      size_t count_at = pos_;
      CRESCENT_ASSIGN_OR_RETURN(entry.count,
                                Read<uint64_t>(absl::StrCat("length of array ", Quote(key))));
      size_t min_element = entry.element_type == GgufValueType::kString
                               ? sizeof(uint64_t)
                               : GgufValueTypeSize(entry.element_type);
      if (entry.count > Remaining() / min_element) {
        return Error(count_at,
                     absl::StrCat("array ", Quote(key), " claims ", entry.count, " elements of ",
                                  GgufValueTypeName(entry.element_type), " but only ", Remaining(),
                                  " bytes are left in the file"));
      }
      entry.offset = pos_;
      if (entry.element_type == GgufValueType::kString ||
          entry.element_type == GgufValueType::kBool) {
        // Token lists hold ~10^5 strings: check cheaply and build a message only on failure.
        for (uint64_t i = 0; i < entry.count; ++i) {
          bool ok = entry.element_type == GgufValueType::kString
                        ? Remaining() >= 8 && Load<uint64_t>(bytes_ + pos_) <= Remaining() - 8
                        : Remaining() >= 1 && bytes_[pos_] <= 1;
          if (!ok) {
            CRESCENT_RETURN_IF_ERROR(SkipScalar(
                entry.element_type, absl::StrCat("element ", i, " of array ", Quote(key))));
            continue;  // Unreachable in practice: SkipScalar fails on the same condition.
          }
          pos_ +=
              entry.element_type == GgufValueType::kString ? 8 + Load<uint64_t>(bytes_ + pos_) : 1;
        }
      } else {
        pos_ += entry.count * min_element;  // Checked against Remaining() above.
      }
    } else {
      entry.offset = pos_;
      CRESCENT_RETURN_IF_ERROR(SkipScalar(entry.type, what));
    }
    auto [it, inserted] = file_->kv_index_.emplace(entry.key, file_->kvs_.size());
    if (!inserted) return Error(at, absl::StrCat("duplicate key ", Quote(key)));
    file_->kvs_.push_back(std::move(entry));
    return absl::OkStatus();
  }

  absl::Status ReadAlignment() {
    if (!file_->Has("general.alignment")) return absl::OkStatus();
    const KvEntry& entry = file_->kvs_[file_->kv_index_.find("general.alignment")->second];
    absl::StatusOr<uint64_t> alignment = file_->GetUint("general.alignment");
    if (!alignment.ok()) {
      return Error(entry.offset, absl::StrCat("general.alignment: ", alignment.status().message()));
    }
    if (*alignment == 0 || !std::has_single_bit(*alignment) || *alignment > (uint64_t{1} << 30)) {
      return Error(entry.offset, absl::StrCat("general.alignment is ", *alignment,
                                              "; it must be a power of two up to 2^30"));
    }
    file_->alignment_ = static_cast<size_t>(*alignment);
    return absl::OkStatus();
  }

  absl::Status ParseTensorInfo(uint64_t index) {
    size_t at = pos_;
    CRESCENT_ASSIGN_OR_RETURN(std::string_view name,
                              ReadString(absl::StrCat("name of tensor #", index)));
    if (name.empty()) return Error(at, absl::StrCat("tensor #", index, " has an empty name"));
    std::string quoted = Quote(name);
    size_t dims_at = pos_;
    CRESCENT_ASSIGN_OR_RETURN(uint32_t n_dims,
                              Read<uint32_t>(absl::StrCat("dimension count of tensor ", quoted)));
    if (n_dims < 1 || n_dims > kMaxDims) {
      return Error(dims_at, absl::StrCat("tensor ", quoted, " has ", n_dims, " dimensions; 1 to ",
                                         kMaxDims, " are supported"));
    }
    GgufTensorInfo info;
    info.name = std::string(name);
    int64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      size_t dim_at = pos_;
      CRESCENT_ASSIGN_OR_RETURN(
          uint64_t dim, Read<uint64_t>(absl::StrCat("dimension ", d, " of tensor ", quoted)));
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(dim_at, absl::StrCat("tensor ", quoted, " dimension ", d, " is ", dim,
                                          "; it must be between 1 and 2^63-1"));
      }
      if (__builtin_mul_overflow(elements, static_cast<int64_t>(dim), &elements)) {
        return Error(dim_at, absl::StrCat("tensor ", quoted, " has more than 2^63-1 elements"));
      }
      info.dims.push_back(static_cast<int64_t>(dim));
    }
    size_t type_at = pos_;
    CRESCENT_ASSIGN_OR_RETURN(uint32_t raw_type,
                              Read<uint32_t>(absl::StrCat("type of tensor ", quoted)));
    info.type = static_cast<kernels::GgmlType>(raw_type);
    kernels::TypeInfo type_info = kernels::GetTypeInfo(info.type);
    if (type_info.block_size == 0) {
      return Error(type_at, absl::StrCat("tensor ", quoted, " has ggml type id ", raw_type,
                                         ", which is unknown or not supported"));
    }
    if (info.dims[0] % type_info.block_size != 0) {
      return Error(dims_at, absl::StrCat("tensor ", quoted, " has rows of ", info.dims[0],
                                         " values, not a multiple of ", type_info.name,
                                         "'s block size ", type_info.block_size));
    }
    size_t nbytes = static_cast<size_t>(info.dims[0] / type_info.block_size);
    bool overflow = __builtin_mul_overflow(nbytes, type_info.type_size, &nbytes);
    for (size_t d = 1; d < info.dims.size(); ++d) {
      overflow |= __builtin_mul_overflow(nbytes, static_cast<size_t>(info.dims[d]), &nbytes);
    }
    if (overflow) {
      return Error(dims_at, absl::StrCat("tensor ", quoted, " byte size overflows"));
    }
    info.nbytes = nbytes;
    size_t offset_at = pos_;
    CRESCENT_ASSIGN_OR_RETURN(info.offset,
                              Read<uint64_t>(absl::StrCat("data offset of tensor ", quoted)));
    if (info.offset % file_->alignment_ != 0) {
      return Error(offset_at,
                   absl::StrCat("tensor ", quoted, " data offset ", info.offset,
                                " is not a multiple of the alignment ", file_->alignment_));
    }
    auto [it, inserted] = file_->tensor_index_.emplace(info.name, file_->tensors_.size());
    if (!inserted) return Error(at, absl::StrCat("duplicate tensor name ", quoted));
    info.data = nullptr;
    file_->tensors_.push_back(std::move(info));
    tensor_info_offsets_.push_back(at);
    return absl::OkStatus();
  }

  absl::Status PlaceData() {
    size_t align = file_->alignment_;
    size_t header_end = pos_;
    size_t data_offset = header_end;
    if (header_end % align != 0) data_offset += align - header_end % align;  // No overflow:
    // header_end <= size_ and align <= 2^30.
    std::vector<GgufTensorInfo>& tensors = file_->tensors_;
    if (data_offset > size_) {
      if (!tensors.empty()) {
        return Error(header_end,
                     absl::StrCat("truncated: the data section would start at byte ", data_offset,
                                  ", past the end of the file (", size_, " bytes)"));
      }
      data_offset = size_;
    }
    file_->data_offset_ = data_offset;
    size_t data_size = size_ - data_offset;
    for (size_t i = 0; i < tensors.size(); ++i) {
      GgufTensorInfo& t = tensors[i];
      if (t.offset > data_size || t.nbytes > data_size - t.offset) {
        return Error(tensor_info_offsets_[i],
                     absl::StrCat("tensor ", Quote(t.name), " data [", t.offset, ", +", t.nbytes,
                                  ") runs past the end of the data section (", data_size,
                                  " bytes from byte ", data_offset, ")"));
      }
      t.data = bytes_ + data_offset + t.offset;
    }
    std::vector<size_t> order(tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return tensors[a].offset < tensors[b].offset; });
    for (size_t k = 1; k < order.size(); ++k) {
      const GgufTensorInfo& prev = tensors[order[k - 1]];
      const GgufTensorInfo& cur = tensors[order[k]];
      if (prev.offset + prev.nbytes > cur.offset) {
        return Error(tensor_info_offsets_[order[k]],
                     absl::StrCat("tensor ", Quote(cur.name), " data at offset ", cur.offset,
                                  " overlaps tensor ", Quote(prev.name), " at [", prev.offset, ", ",
                                  prev.offset + prev.nbytes, ")"));
      }
    }
    return absl::OkStatus();
  }

  GgufFile* file_;
  const uint8_t* bytes_;
  size_t size_;
  size_t pos_ = 0;
  uint64_t tensor_count_ = 0;
  uint64_t kv_count_ = 0;
  size_t tensor_count_offset_ = 0;
  std::vector<size_t> tensor_info_offsets_;
};

// ---------------------------------------------------------------------------------------------

GgufFile::GgufFile(std::unique_ptr<Storage> storage)
    : storage_(std::move(storage)), bytes_(storage_->data()), size_(storage_->size()) {}

GgufFile::~GgufFile() = default;

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Create(std::unique_ptr<Storage> storage) {
  std::unique_ptr<GgufFile> file(new GgufFile(std::move(storage)));
  Parser parser(file.get());
  CRESCENT_RETURN_IF_ERROR(parser.Parse());
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBuffer(std::string bytes) {
  return Create(std::make_unique<BufferStorage>(bytes));
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("opening GGUF file ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, absl::StrCat("stat of GGUF file ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("GGUF file ", path, " is not a regular file"));
  }
  std::unique_ptr<Storage> storage;
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    storage = std::make_unique<BufferStorage>(std::string_view());
  } else {
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, absl::StrCat("mmap of GGUF file ", path));
    }
    storage = std::make_unique<MmapStorage>(addr, size);
  }
  ::close(fd);
  absl::StatusOr<std::unique_ptr<GgufFile>> file = Create(std::move(storage));
  if (!file.ok()) return Annotate(file.status(), absl::StrCat("GGUF file ", path));
  return file;
}

// ---------------------------------------------------------------------------------------------
// Getters. Validation guarantees every offset they read lies inside the file.

bool GgufFile::Has(std::string_view key) const { return kv_index_.find(key) != kv_index_.end(); }

absl::StatusOr<const GgufFile::KvEntry*> GgufFile::Find(std::string_view key) const {
  auto it = kv_index_.find(key);
  if (it == kv_index_.end()) {
    return absl::NotFoundError(absl::StrCat("GGUF key '", std::string(key), "' not found"));
  }
  return &kvs_[it->second];
}

absl::Status GgufFile::TypeError(const KvEntry& entry, std::string_view wanted) const {
  std::string actual = GgufValueTypeName(entry.type);
  if (entry.type == GgufValueType::kArray) {
    actual = absl::StrCat("array of ", GgufValueTypeName(entry.element_type));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("GGUF key '", entry.key, "' has type ", actual, ", not ", std::string(wanted)));
}

absl::StatusOr<GgufValueType> GgufFile::TypeOf(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  return entry->type;
}

absl::StatusOr<GgufValueType> GgufFile::ArrayTypeOf(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  if (entry->type != GgufValueType::kArray) return TypeError(*entry, "array");
  return entry->element_type;
}

absl::StatusOr<uint64_t> GgufFile::ArraySize(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  if (entry->type != GgufValueType::kArray) return TypeError(*entry, "array");
  return entry->count;
}

absl::StatusOr<int64_t> GgufFile::ReadSigned(const KvEntry& entry, GgufValueType type,
                                             size_t offset) const {
  const uint8_t* p = bytes_ + offset;
  switch (type) {
    case GgufValueType::kUint8:
      return Load<uint8_t>(p);
    case GgufValueType::kInt8:
      return Load<int8_t>(p);
    case GgufValueType::kUint16:
      return Load<uint16_t>(p);
    case GgufValueType::kInt16:
      return Load<int16_t>(p);
    case GgufValueType::kUint32:
      return Load<uint32_t>(p);
    case GgufValueType::kInt32:
      return Load<int32_t>(p);
    case GgufValueType::kInt64:
      return Load<int64_t>(p);
    case GgufValueType::kUint64: {
      uint64_t v = Load<uint64_t>(p);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::OutOfRangeError(
            absl::StrCat("GGUF key '", entry.key, "' value ", v, " does not fit in int64"));
      }
      return static_cast<int64_t>(v);
    }
    default:
      return TypeError(entry, "an integer");
  }
}

absl::StatusOr<uint64_t> GgufFile::ReadUnsigned(const KvEntry& entry, GgufValueType type,
                                                size_t offset) const {
  if (type == GgufValueType::kUint64) return Load<uint64_t>(bytes_ + offset);
  CRESCENT_ASSIGN_OR_RETURN(int64_t v, ReadSigned(entry, type, offset));
  if (v < 0) {
    return absl::OutOfRangeError(
        absl::StrCat("GGUF key '", entry.key, "' value ", v, " is negative"));
  }
  return static_cast<uint64_t>(v);
}

double GgufFile::ReadDouble(GgufValueType type, size_t offset) const {
  if (type == GgufValueType::kFloat32) return Load<float>(bytes_ + offset);
  return Load<double>(bytes_ + offset);
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  if (entry->type != GgufValueType::kString) return TypeError(*entry, "string");
  uint64_t len = Load<uint64_t>(bytes_ + entry->offset);
  return std::string(reinterpret_cast<const char*>(bytes_ + entry->offset + 8), len);
}

absl::StatusOr<uint64_t> GgufFile::GetUint(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  if (!IsInteger(entry->type)) return TypeError(*entry, "an integer");
  return ReadUnsigned(*entry, entry->type, entry->offset);
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  if (!IsInteger(entry->type)) return TypeError(*entry, "an integer");
  return ReadSigned(*entry, entry->type, entry->offset);
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  if (IsFloat(entry->type)) return ReadDouble(entry->type, entry->offset);
  if (entry->type == GgufValueType::kUint64) {
    return static_cast<double>(Load<uint64_t>(bytes_ + entry->offset));
  }
  if (IsInteger(entry->type)) {
    CRESCENT_ASSIGN_OR_RETURN(int64_t v, ReadSigned(*entry, entry->type, entry->offset));
    return static_cast<double>(v);
  }
  return TypeError(*entry, "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  if (entry->type != GgufValueType::kBool) return TypeError(*entry, "bool");
  return bytes_[entry->offset] != 0;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  if (entry->type != GgufValueType::kArray || entry->element_type != GgufValueType::kString) {
    return TypeError(*entry, "array of string");
  }
  std::vector<std::string> out;
  out.reserve(entry->count);
  size_t pos = entry->offset;
  for (uint64_t i = 0; i < entry->count; ++i) {
    uint64_t len = Load<uint64_t>(bytes_ + pos);
    out.emplace_back(reinterpret_cast<const char*>(bytes_ + pos + 8), len);
    pos += 8 + len;
  }
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  GgufValueType et = entry->element_type;
  if (entry->type != GgufValueType::kArray || !(IsFloat(et) || IsInteger(et))) {
    return TypeError(*entry, "array of float");
  }
  size_t step = GgufValueTypeSize(et);
  std::vector<float> out;
  out.reserve(entry->count);
  for (uint64_t i = 0; i < entry->count; ++i) {
    size_t offset = entry->offset + i * step;
    if (IsFloat(et)) {
      out.push_back(static_cast<float>(ReadDouble(et, offset)));
    } else if (et == GgufValueType::kUint64) {
      out.push_back(static_cast<float>(Load<uint64_t>(bytes_ + offset)));
    } else {
      CRESCENT_ASSIGN_OR_RETURN(int64_t v, ReadSigned(*entry, et, offset));
      out.push_back(static_cast<float>(v));
    }
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  CRESCENT_ASSIGN_OR_RETURN(const KvEntry* entry, Find(key));
  GgufValueType et = entry->element_type;
  if (entry->type != GgufValueType::kArray || !IsInteger(et)) {
    return TypeError(*entry, "array of integer");
  }
  size_t step = GgufValueTypeSize(et);
  std::vector<int64_t> out;
  out.reserve(entry->count);
  for (uint64_t i = 0; i < entry->count; ++i) {
    CRESCENT_ASSIGN_OR_RETURN(int64_t v, ReadSigned(*entry, et, entry->offset + i * step));
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> GgufFile::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(kvs_.size());
  for (const KvEntry& e : kvs_) keys.push_back(e.key);
  return keys;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace crescent::model
