// KV master operation rates on an in-process MasterState, printed by kvstore_bench and by
// transfer_bench (so that one run of the latter gives every figure issue 4 asks for).
#ifndef CRESCENT_BENCH_KVSTORE_MASTER_OPS_H_
#define CRESCENT_BENCH_KVSTORE_MASTER_OPS_H_

#include <cstddef>

namespace crescent::kvstore {

// Registers 3 nodes with one DRAM segment each, then times `keys` puts (PutStart + PutEnd of
// 64 KiB objects), `keys` leased gets and BatchExists over batches of 64, and prints ops/s to
// stdout. Exits the process with status 1 if the master refuses an operation.
void PrintMasterStateOps(size_t keys);

}  // namespace crescent::kvstore

#endif  // CRESCENT_BENCH_KVSTORE_MASTER_OPS_H_
