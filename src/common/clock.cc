#include "src/common/clock.h"

#include <time.h>

namespace crescent {

int64_t RealClock::NowNanos() const {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

const RealClock* RealClock::Get() {
  static const RealClock* clock = new RealClock();
  return clock;
}

}  // namespace crescent
