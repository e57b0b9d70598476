// EventQueue: the simulator's agenda — events ordered by time, ties by insertion order, so a
// run is deterministic. Not thread-safe.
#ifndef CRESCENT_BENCH_SIM_EVENT_QUEUE_H_
#define CRESCENT_BENCH_SIM_EVENT_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <queue>
#include <vector>

namespace crescent::bench::sim {

struct Event {
  double time_s = 0.0;
  int kind = 0;      // meaning is the simulator's
  int a = 0;         // payload, e.g. an instance index
  int b = 0;         // payload, e.g. a request index
  uint64_t seq = 0;  // set by Push: insertion order
};

class EventQueue {
 public:
  // Schedules `e` at e.time_s. REQUIRES: e.time_s >= the time of the last popped event.
  void Push(Event e);
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }
  // The earliest event (first pushed among equal times). REQUIRES: !empty().
  Event Pop();
  const Event& Top() const { return heap_.top(); }
  uint64_t pushed() const { return next_seq_; }

 private:
  struct Later {
    bool operator()(const Event& x, const Event& y) const {
      return x.time_s != y.time_s ? x.time_s > y.time_s : x.seq > y.seq;
    }
  };
  std::priority_queue<Event, std::vector<Event>, Later> heap_;
  uint64_t next_seq_ = 0;
};

}  // namespace crescent::bench::sim

#endif  // CRESCENT_BENCH_SIM_EVENT_QUEUE_H_
