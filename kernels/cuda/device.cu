#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace crescent::kernels::cuda {
namespace {

absl::Status Error(cudaError_t e, const char* what,
                   absl::StatusCode code = absl::StatusCode::kInternal) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::Status(code, absl::StrCat(what, ": ", cudaGetErrorName(e), " (",
                                         cudaGetErrorString(e), ")"));
}

}  // namespace

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clears the sticky "no driver" error
    return 0;
  }
  return n;
}

absl::Status CheckDevice() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Error(e, "no CUDA device", absl::StatusCode::kFailedPrecondition);
  }
  if (n == 0) return absl::FailedPreconditionError("no CUDA device: the driver reports none");
  return absl::OkStatus();
}

std::string DeviceDescription() {
  if (DeviceCount() == 0) return "";
  int dev = 0;
  cudaDeviceProp p;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    return "";
  }
  return absl::StrFormat("%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
                         static_cast<double>(p.totalGlobalMem) / (1 << 30));
}

absl::Status Synchronize() { return Error(cudaDeviceSynchronize(), "CUDA synchronize"); }

absl::Status LaunchStatus(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA kernel ", op, " failed to launch: ",
                                          cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Create(size_t bytes) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  absl::Status s = CheckDevice();
  if (!s.ok()) return s;
  cudaError_t e = cudaMalloc(&b.data_, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    b.data_ = nullptr;
    return Error(e, absl::StrCat("cudaMalloc of ", bytes, " bytes").c_str(),
                 absl::StatusCode::kResourceExhausted);
  }
  b.size_ = bytes;
  return b;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return Error(cudaMemcpy(device_dst, host_src, bytes, cudaMemcpyHostToDevice),
               "CUDA copy to device");
}

absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return Error(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost),
               "CUDA copy to host");
}

absl::Status CopyOnDevice(void* device_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return Error(cudaMemcpyAsync(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice),
               "CUDA copy on device");
}

absl::StatusOr<HostMapping> HostMapping::Create(void* host, size_t bytes) {
  if (host == nullptr || bytes == 0) {
    return absl::InvalidArgumentError("HostMapping needs a non-empty host range");
  }
  absl::Status s = CheckDevice();
  if (!s.ok()) return s;
  cudaError_t e = cudaHostRegister(host, bytes, cudaHostRegisterMapped);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Error(e, absl::StrCat("cudaHostRegister of ", bytes, " bytes").c_str());
  }
  HostMapping m;
  m.host_ = host;
  m.size_ = bytes;
  e = cudaHostGetDevicePointer(&m.device_, host, 0);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Error(e, "cudaHostGetDevicePointer");  // m's destructor unregisters
  }
  return m;
}

HostMapping::HostMapping(HostMapping&& other) noexcept
    : host_(std::exchange(other.host_, nullptr)),
      device_(std::exchange(other.device_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

HostMapping& HostMapping::operator=(HostMapping&& other) noexcept {
  if (this != &other) {
    if (host_ != nullptr) cudaHostUnregister(host_);
    host_ = std::exchange(other.host_, nullptr);
    device_ = std::exchange(other.device_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

HostMapping::~HostMapping() {
  if (host_ != nullptr) cudaHostUnregister(host_);
}

}  // namespace crescent::kernels::cuda
