// FakeCompletionService: a scripted CompletionService for the HTTP front's tests. Each request
// yields, per choice, the pieces in `pieces` (one chunk each, `piece_delay` apart, the last with
// `finish_reason`), from one worker thread shared by all requests, then on_done(OK, usage).
// Faults: Validate() and Start() can be made to fail, and a request can be held open until it is
// cancelled. Thread-safe.
#ifndef CRESCENT_TESTS_SRC_SERVER_FAKE_COMPLETION_SERVICE_H_
#define CRESCENT_TESTS_SRC_SERVER_FAKE_COMPLETION_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "src/server/completion_service.h"

namespace crescent::server {

class FakeCompletionService final : public CompletionService {
 public:
  struct Script {
    std::vector<std::string> pieces = {"Hello", ",", " world"};
    std::string finish_reason = "stop";
    std::chrono::milliseconds piece_delay{0};
    bool hold_until_cancelled = false;  // After the pieces, wait for Cancel() instead of ending.
    absl::Status start_error;           // Non-OK: on_done(start_error) right from Start().
    absl::Status late_error;            // Non-OK: on_done(late_error) after the pieces.
    Usage usage{.prompt_tokens = 7, .completion_tokens = 3, .cached_tokens = 2};
  };

  FakeCompletionService() : worker_([this] { Run(); }) {}
  ~FakeCompletionService() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  void set_script(Script script) {
    std::lock_guard<std::mutex> lock(mu_);
    script_ = std::move(script);
  }
  void set_validate_error(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    validate_error_ = std::move(status);
  }
  void set_ready(bool ready) { ready_ = ready; }
  // While paused, requests are accepted but no pieces are emitted.
  void set_paused(bool paused) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      paused_ = paused;
    }
    cv_.notify_all();
  }

  int started() const { return started_; }
  int cancelled() const { return cancelled_; }
  int finished() const { return finished_; }
  CompletionRequest last_request() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_request_;
  }

  absl::Status Validate(const CompletionRequest& request) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!request.model.empty() && request.model != "smollm2" && request.model != "other") {
      return absl::NotFoundError("model '" + request.model + "' does not exist");
    }
    return validate_error_;
  }

  std::unique_ptr<CompletionHandle> Start(CompletionRequest request, ChunkCallback on_chunk,
                                          DoneCallback on_done) override {
    auto job = std::make_shared<Job>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_request_ = request;
      job->script = script_;
      job->n = request.n;
      job->on_chunk = std::move(on_chunk);
      job->on_done = std::move(on_done);
      job->next = std::chrono::steady_clock::now();
    }
    ++started_;
    if (!job->script.start_error.ok()) {
      DoneCallback done = std::move(job->on_done);
      job->on_chunk = nullptr;
      ++finished_;
      done(job->script.start_error, Usage{});
      return std::make_unique<Handle>(job, this);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(job);
    }
    cv_.notify_all();
    return std::make_unique<Handle>(job, this);
  }

  std::vector<ModelInfo> Models() override {
    return {
        ModelInfo{
            .id = "smollm2", .created = 1700000000, .owned_by = "crescent", .max_model_len = 8192},
        ModelInfo{.id = "other", .created = 1700000001}};
  }

  bool Ready() override { return ready_; }

 private:
  struct Job {
    Script script;
    int n = 1;
    size_t step = 0;  // Pieces emitted so far, over all choices.
    std::chrono::steady_clock::time_point next;
    std::atomic<bool> cancel{false};
    ChunkCallback on_chunk;
    DoneCallback on_done;
  };

  class Handle final : public CompletionHandle {
   public:
    Handle(std::shared_ptr<Job> job, FakeCompletionService* service)
        : job_(std::move(job)), service_(service) {}
    void Cancel() override {
      if (!job_->cancel.exchange(true)) ++service_->cancelled_;
      service_->cv_.notify_all();
    }

   private:
    std::shared_ptr<Job> job_;
    FakeCompletionService* service_;
  };

  // Emits due pieces of every job, outside the lock, round-robin.
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!quit_) {
      auto now = std::chrono::steady_clock::now();
      auto wake = now + std::chrono::milliseconds(50);
      std::vector<std::function<void()>> actions;
      for (auto it = jobs_.begin(); it != jobs_.end();) {
        std::shared_ptr<Job> job = *it;
        const size_t total = job->script.pieces.size() * job->n;
        if (job->cancel) {
          actions.push_back([this, job] { Finish(*job, absl::CancelledError("cancelled")); });
          it = jobs_.erase(it);
          continue;
        }
        if (job->step >= total) {
          if (!job->script.hold_until_cancelled) {
            absl::Status status = job->script.late_error;
            actions.push_back([this, job, status] { Finish(*job, status); });
            it = jobs_.erase(it);
            continue;
          }
          ++it;
          continue;
        }
        if (job->next <= now && !paused_) {
          // Choices interleave: piece p of choice c is step p * n + c.
          const size_t p = job->step / job->n;
          const int c = static_cast<int>(job->step % job->n);
          CompletionChunk chunk;
          chunk.choice_index = c;
          chunk.text = job->script.pieces[p];
          if (p + 1 == job->script.pieces.size() && !job->script.hold_until_cancelled) {
            chunk.finish_reason = job->script.finish_reason;
          }
          ++job->step;
          job->next = now + job->script.piece_delay;
          actions.push_back(
              [job, chunk = std::move(chunk)]() mutable { job->on_chunk(std::move(chunk)); });
        }
        if (!paused_) wake = std::min(wake, job->next);
        ++it;
      }
      if (actions.empty()) {
        cv_.wait_until(lock, wake);
        continue;
      }
      lock.unlock();
      for (auto& action : actions) action();
      lock.lock();
    }
    // Whatever is left gets its on_done, as the contract requires.
    for (auto& job : jobs_) Finish(*job, absl::CancelledError("service shutting down"));
    jobs_.clear();
  }

  void Finish(Job& job, const absl::Status& status) {
    ++finished_;
    DoneCallback done = std::move(job.on_done);
    job.on_chunk = nullptr;
    job.on_done = nullptr;
    done(status, job.script.usage);
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;
  bool paused_ = false;
  Script script_;
  absl::Status validate_error_;
  CompletionRequest last_request_;
  std::list<std::shared_ptr<Job>> jobs_;
  std::atomic<bool> ready_{true};
  std::atomic<int> started_{0};
  std::atomic<int> cancelled_{0};
  std::atomic<int> finished_{0};
  std::thread worker_;
};

}  // namespace crescent::server

#endif  // CRESCENT_TESTS_SRC_SERVER_FAKE_COMPLETION_SERVICE_H_
