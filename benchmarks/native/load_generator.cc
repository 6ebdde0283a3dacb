// Closed-loop simulated probes in native code, so that the load costs the two cores it
// shares with the server as little as a real probe fleet (on other machines) costs it.
//
// The Python load generator spends about as much CPU per window as the server's own gRPC
// layer does (benchmarks/archive/2026-12-06.md), which on a 2-core machine caps every closed-loop
// point below what the server could carry. This program runs the same load points with
// gRPC's C++ callback API: C probes, each sending one window and the next when its answer
// arrives, by unary ClassifyWindow calls or each on its own StreamClassifyWindows stream.
// benchmarks/load_generator.py prepares the windows, runs it, and passes its JSON through;
// the summary has the same fields as the Python generator's.
//
//   load_generator --target 127.0.0.1:50051 --windows FILE --mode stream --concurrency 64
//
// FILE holds the windows as serialized faultprint.v1.Window messages, each preceded by its
// length as a little-endian uint32. SIGTERM ends the run early, and the measurement with it.

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "faultprint/v1/probe_service.grpc.pb.h"

namespace fp = faultprint::v1;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_told_to_stop{false};

void OnSigterm(int) { g_told_to_stop.store(true); }

struct Options {
  std::string target;
  std::string windows_path;
  std::string network = "bench";
  std::string mode = "unary";
  int concurrency = 1;
  int connections = 1;
  double warmup_s = 2.0;
  double duration_s = 10.0;
  // Deadline of each unary call and of each stream, as the Python generator's client has.
  double call_timeout_s = 60.0;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "load_generator: %s\nusage: load_generator --target HOST:PORT --windows FILE "
               "[--mode unary|stream] [--concurrency C] [--connections N] [--warmup-s S] "
               "[--duration-s S] [--network NAME]\n",
               why.c_str());
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(flag + " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--target") o.target = value;
    else if (flag == "--windows") o.windows_path = value;
    else if (flag == "--network") o.network = value;
    else if (flag == "--mode") o.mode = value;
    else if (flag == "--concurrency") o.concurrency = std::stoi(value);
    else if (flag == "--connections") o.connections = std::stoi(value);
    else if (flag == "--warmup-s") o.warmup_s = std::stod(value);
    else if (flag == "--duration-s") o.duration_s = std::stod(value);
    else Usage("unknown flag " + flag);
  }
  if (o.target.empty() || o.windows_path.empty()) Usage("--target and --windows are required");
  if (o.mode != "unary" && o.mode != "stream") Usage("--mode is unary or stream, got " + o.mode);
  if (o.concurrency < 1 || o.connections < 1) Usage("--concurrency and --connections are at least 1");
  if (o.duration_s <= 0 || o.warmup_s < 0) Usage("--duration-s must be positive, --warmup-s not negative");
  return o;
}

std::vector<fp::Window> ReadWindows(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open windows file " + path);
  std::vector<fp::Window> windows;
  uint32_t size = 0;
  while (in.read(reinterpret_cast<char*>(&size), sizeof size)) {
    std::string bytes(size, '\0');
    if (!in.read(bytes.data(), size)) throw std::runtime_error("windows file ends inside a window");
    windows.emplace_back();
    if (!windows.back().ParseFromString(bytes)) throw std::runtime_error("a window does not parse");
  }
  if (windows.empty()) throw std::runtime_error("windows file " + path + " holds no window");
  return windows;
}

// gRPC's status names, as Python's grpc.StatusCode spells them.
const char* StatusName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",         "UNKNOWN",   "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
      "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}

// A failed call's outcome; a deadline the client's own timer enforced is LATE (no answer in
// time), as the Python generator counts it.
std::string OutcomeOf(const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
      status.error_message() == "Deadline Exceeded")
    return "LATE";
  return StatusName(status.error_code());
}

// One probe's calls. Each probe has one call outstanding at a time, so its lock is never
// contended while the run goes on; it keeps the summary from reading a tally that a probe
// still in a call after the final grace period (a server that stopped answering) writes.
struct ProbeTally {
  std::mutex mu;
  std::vector<float> latencies_ms;
  std::map<std::string, int64_t> outcomes;
  std::map<std::string, std::vector<int64_t>> timeline;
};

class Run {
 public:
  explicit Run(const Options& o)
      : options_(o),
        start_(Clock::now()),
        measure_from_(start_ + Seconds(o.warmup_s)),
        measure_to_((measure_from_ + Seconds(o.duration_s)).time_since_epoch().count()),
        tallies_(o.concurrency),
        running_(o.concurrency) {}

  static Clock::duration Seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  const Options& options() const { return options_; }
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }
  // gRPC takes deadlines on the system clock.
  std::chrono::system_clock::time_point call_deadline(double extra_s = 0) const {
    return std::chrono::system_clock::now() +
           std::chrono::duration_cast<std::chrono::system_clock::duration>(
               std::chrono::duration<double>(options_.call_timeout_s + extra_s));
  }

  void Add(int probe, Clock::time_point started, const std::string& outcome) {
    const auto finished = Clock::now();
    ProbeTally& t = tallies_[probe];
    std::lock_guard<std::mutex> lock(t.mu);
    const auto second = static_cast<size_t>(std::chrono::duration<double>(finished - start_).count());
    auto& counts = t.timeline[outcome];
    if (counts.size() <= second) counts.resize(second + 1, 0);
    ++counts[second];
    if (finished < measure_from_ || finished > measure_to()) return;
    ++t.outcomes[outcome];
    if (outcome == "OK")
      t.latencies_ms.push_back(std::chrono::duration<float, std::milli>(finished - started).count());
  }

  void Finished() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--running_ == 0) all_done_.notify_all();
  }

  // Waits out warm-up and duration, or less on SIGTERM, then lets every probe finish.
  void WaitOut() {
    while (Clock::now() < measure_to() && !g_told_to_stop.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (g_told_to_stop.load())
      measure_to_.store(std::min(measure_to(), Clock::now()).time_since_epoch().count());
    stopping_.store(true);
    std::unique_lock<std::mutex> lock(mu_);
    all_done_.wait_for(lock, std::chrono::seconds(30), [this] { return running_ == 0; });
  }

  std::string Summary();

 private:
  Clock::time_point measure_to() const {
    return Clock::time_point(Clock::duration(measure_to_.load(std::memory_order_relaxed)));
  }

  Options options_;
  Clock::time_point start_, measure_from_;
  // Moves earlier on SIGTERM while probes read it, so it is kept as a tick count.
  std::atomic<Clock::rep> measure_to_;
  std::vector<ProbeTally> tallies_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable all_done_;
  int running_;
};

// numpy.percentile's default (linear) rule over sorted values.
double Percentile(const std::vector<float>& sorted, double p) {
  if (sorted.empty()) return NAN;
  const double pos = p / 100.0 * (sorted.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

std::string Number(double x) {
  if (std::isnan(x)) return "NaN";
  std::ostringstream s;
  s.precision(10);
  s << x;
  return s.str();
}

std::string Run::Summary() {
  std::vector<float> latencies;
  std::map<std::string, int64_t> outcomes;
  std::map<std::string, std::vector<int64_t>> timeline;
  // A run told to stop during its warm-up measured nothing.
  const double seconds = std::max(0.0, std::chrono::duration<double>(measure_to() - measure_from_).count());
  const size_t run_seconds = static_cast<size_t>(std::chrono::duration<double>(measure_to() - start_).count()) + 1;
  for (ProbeTally& t : tallies_) {
    std::lock_guard<std::mutex> lock(t.mu);
    latencies.insert(latencies.end(), t.latencies_ms.begin(), t.latencies_ms.end());
    for (const auto& [outcome, n] : t.outcomes) outcomes[outcome] += n;
    for (const auto& [outcome, counts] : t.timeline) {
      auto& merged = timeline[outcome];
      merged.resize(run_seconds, 0);
      for (size_t s = 0; s < counts.size() && s < run_seconds; ++s) merged[s] += counts[s];
    }
  }
  std::sort(latencies.begin(), latencies.end());
  const int64_t ok = outcomes.count("OK") ? outcomes["OK"] : 0;
  std::ostringstream out;
  out << "{\"generator\": \"native\", \"mode\": \"" << options_.mode << "\", \"concurrency\": "
      << options_.concurrency << ", \"rate\": 0.0, \"deadline_ms\": 0.0, \"throttle_ratio\": 0.0"
      << ", \"seconds\": " << Number(seconds) << ", \"ok\": " << ok << ", \"outcomes\": {";
  const char* sep = "";
  for (const auto& [outcome, n] : outcomes) { out << sep << "\"" << outcome << "\": " << n; sep = ", "; }
  out << "}, \"windows_per_s\": " << Number(seconds > 0 ? ok / seconds : 0.0)
      << ", \"p50_ms\": " << Number(Percentile(latencies, 50))
      << ", \"p95_ms\": " << Number(Percentile(latencies, 95))
      << ", \"p99_ms\": " << Number(Percentile(latencies, 99))
      << ", \"max_ms\": " << Number(latencies.empty() ? NAN : latencies.back()) << ", \"timeline\": {";
  sep = "";
  for (const auto& [outcome, counts] : timeline) {
    out << sep << "\"" << outcome << "\": [";
    for (size_t s = 0; s < counts.size(); ++s) out << (s ? ", " : "") << counts[s];
    out << "]";
    sep = ", ";
  }
  // The Python generator reports its event loop's lag; this one has no event loop.
  out << "}, \"generator_loop_lag_ms\": []}";
  return out.str();
}

// Requests built once per probe and window: sending one costs gRPC's serialisation only.
template <typename Request>
std::vector<Request> ProbeRequests(const Options& o, const std::vector<fp::Window>& windows, int probe) {
  std::vector<Request> requests(windows.size());
  for (size_t w = 0; w < windows.size(); ++w) {
    requests[w].set_network(o.network);
    requests[w].set_node("probe-" + std::to_string(probe));
    *requests[w].mutable_window() = windows[w];
  }
  return requests;
}

class UnaryProbe {
 public:
  UnaryProbe(fp::ProbeService::Stub* stub, Run* run, const std::vector<fp::Window>& windows, int probe)
      : stub_(stub), run_(run), probe_(probe), next_(probe),
        requests_(ProbeRequests<fp::ClassifyWindowRequest>(run->options(), windows, probe)) {}

  void Send() {
    context_ = std::make_unique<grpc::ClientContext>();
    context_->set_deadline(run_->call_deadline());
    started_ = Clock::now();
    const auto& request = requests_[next_ % requests_.size()];
    stub_->async()->ClassifyWindow(context_.get(), &request, &response_,
                                   [this](grpc::Status status) { Answered(status); });
  }

 private:
  void Answered(const grpc::Status& status) {
    run_->Add(probe_, started_, status.ok() ? "OK" : OutcomeOf(status));
    ++next_;
    if (run_->stopping()) {
      run_->Finished();
      return;
    }
    Send();
  }

  fp::ProbeService::Stub* stub_;
  Run* run_;
  int probe_;
  size_t next_;
  std::vector<fp::ClassifyWindowRequest> requests_;
  std::unique_ptr<grpc::ClientContext> context_;
  fp::ClassifyWindowResponse response_;
  Clock::time_point started_;
};

class StreamProbe : public grpc::ClientBidiReactor<fp::StreamClassifyWindowsRequest,
                                                   fp::StreamClassifyWindowsResponse> {
 public:
  StreamProbe(fp::ProbeService::Stub* stub, Run* run, const std::vector<fp::Window>& windows, int probe)
      : run_(run), probe_(probe), next_(probe),
        requests_(ProbeRequests<fp::StreamClassifyWindowsRequest>(run->options(), windows, probe)) {
    context_.set_deadline(run->call_deadline(run->options().warmup_s + run->options().duration_s));
    stub->async()->StreamClassifyWindows(&context_, this);
  }

  void Start() {
    Send();
    StartCall();
  }

  // The next window goes out once its answer is read and its write is done: the two
  // callbacks may come in either order, and on different threads.
  void OnWriteDone(bool ok) override {
    if (ok) Settled();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // The stream ended; OnDone says how.
    run_->Add(probe_, started_, response_.has_diagnosis()
                                    ? "OK"
                                    : "STREAM_ERROR_" + std::to_string(response_.error().code()));
    Settled();
  }

  void OnDone(const grpc::Status& status) override {
    if (!status.ok() && !run_->stopping()) run_->Add(probe_, started_, OutcomeOf(status));
    run_->Finished();
  }

 private:
  void Send() {
    auto& request = requests_[next_ % requests_.size()];
    request.set_sequence(next_);
    unsettled_.store(2);
    started_ = Clock::now();
    StartWrite(&request);
    StartRead(&response_);
  }

  void Settled() {
    if (unsettled_.fetch_sub(1) != 1) return;
    ++next_;
    if (run_->stopping()) {
      StartWritesDone();
      return;
    }
    Send();
  }

  Run* run_;
  int probe_;
  uint64_t next_;
  std::vector<fp::StreamClassifyWindowsRequest> requests_;
  grpc::ClientContext context_;
  fp::StreamClassifyWindowsResponse response_;
  Clock::time_point started_;
  std::atomic<int> unsettled_{0};
};

std::vector<std::unique_ptr<fp::ProbeService::Stub>> Stubs(const Options& o) {
  std::vector<std::unique_ptr<fp::ProbeService::Stub>> stubs;
  for (int c = 0; c < o.connections; ++c) {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(16 * 1024 * 1024);
    args.SetMaxReceiveMessageSize(16 * 1024 * 1024);
    // Each channel its own connection, as separate probes would open: a server run with
    // several workers shares out connections, not calls.
    if (o.connections > 1) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stubs.push_back(fp::ProbeService::NewStub(
        grpc::CreateCustomChannel(o.target, grpc::InsecureChannelCredentials(), args)));
  }
  return stubs;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  std::vector<fp::Window> windows;
  try {
    windows = ReadWindows(options.windows_path);
  } catch (const std::exception& e) {
    Usage(e.what());
  }
  std::signal(SIGTERM, OnSigterm);
  auto stubs = Stubs(options);
  Run run(options);
  std::vector<std::unique_ptr<UnaryProbe>> unary;
  std::vector<std::unique_ptr<StreamProbe>> streams;
  for (int p = 0; p < options.concurrency; ++p) {
    auto* stub = stubs[p % stubs.size()].get();
    if (options.mode == "unary") {
      unary.push_back(std::make_unique<UnaryProbe>(stub, &run, windows, p));
      unary.back()->Send();
    } else {
      streams.push_back(std::make_unique<StreamProbe>(stub, &run, windows, p));
      streams.back()->Start();
    }
  }
  run.WaitOut();
  std::printf("%s\n", run.Summary().c_str());
  std::fflush(stdout);
  // Probes still in a call after the 30 s grace are abandoned, not destroyed under gRPC.
  for (auto& p : unary) (void)p.release();
  for (auto& p : streams) (void)p.release();
  return 0;
}
