// The CUDA device as the kernels in kernels/cuda use it: presence, device memory, copies, and
// host memory mapped for the device (the engine's KV cache stays in host memory; see
// cuda_backend.h). Every call runs on the current device's legacy default stream, so kernels
// and copies run in the order they were issued. Errors are absl::Status values naming the call
// and CUDA's own message; nothing here aborts.
#ifndef CRESCENT_KERNELS_CUDA_DEVICE_H_
#define CRESCENT_KERNELS_CUDA_DEVICE_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::kernels::cuda {

// Number of usable CUDA devices; 0 when there is none or no driver (never an error).
int DeviceCount();

// OK when a device is usable, else FailedPrecondition naming why ("no CUDA device: ...").
absl::Status CheckDevice();

// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for the current device; empty without one.
std::string DeviceDescription();

// Waits for every kernel and copy issued so far; returns the first error any of them raised.
absl::Status Synchronize();

// The status of the last kernel launch (launch errors only; faults while running surface at
// the next Synchronize or copy). `op` names the kernel in the message.
absl::Status LaunchStatus(const char* op);

// Device memory. Move-only; frees on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Errors: FailedPrecondition without a device; ResourceExhausted when `bytes` cannot be had.
  // bytes == 0 gives an empty buffer (data() == nullptr).
  static absl::StatusOr<DeviceBuffer> Create(size_t bytes);
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Copies `bytes` between host memory and device memory (synchronous with respect to the host;
// ordered after every kernel issued before). REQUIRES: the ranges are valid on their sides.
absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes);
absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes);
// Device to device, ordered with the kernels (asynchronous with respect to the host).
absl::Status CopyOnDevice(void* device_dst, const void* device_src, size_t bytes);

// Host memory the device reads and writes in place over the bus (cudaHostRegister, mapped):
// the KV cache pages, which other processes (the prefill node's transfers, the pool) also use.
// Unregisters on destruction. Move-only.
class HostMapping {
 public:
  HostMapping() = default;
  // Errors: FailedPrecondition without a device; InvalidArgument for a null or empty range;
  // Internal when the driver refuses the range (CUDA's message included).
  static absl::StatusOr<HostMapping> Create(void* host, size_t bytes);
  HostMapping(HostMapping&& other) noexcept;
  HostMapping& operator=(HostMapping&& other) noexcept;
  HostMapping(const HostMapping&) = delete;
  HostMapping& operator=(const HostMapping&) = delete;
  ~HostMapping();

  void* host() const { return host_; }
  size_t size() const { return size_; }
  // The device's address of host(); kernels read and write the host bytes through it.
  void* device() const { return device_; }

 private:
  void* host_ = nullptr;
  void* device_ = nullptr;
  size_t size_ = 0;
};

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_DEVICE_H_
