#include "bench/sim/event_queue.h"

namespace crescent::bench::sim {

void EventQueue::Push(Event e) {
  e.seq = next_seq_++;
  heap_.push(e);
}

Event EventQueue::Pop() {
  Event e = heap_.top();
  heap_.pop();
  return e;
}

}  // namespace crescent::bench::sim
