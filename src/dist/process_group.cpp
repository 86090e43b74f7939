#include "gmsa/dist/process_group.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <thread>

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

// c10d exists only in LibTorch builds with distributed support; Gloo and NCCL each only where
// LibTorch was built with them (its CMake config defines USE_C10D_GLOO / USE_C10D_NCCL for us).
// Debian's CPU LibTorch ships ProcessGroupNCCL.hpp but not NCCL: without USE_C10D_NCCL nothing
// here refers to it.
#if defined(USE_DISTRIBUTED) && __has_include(<torch/csrc/distributed/c10d/TCPStore.hpp>)
#define GMSA_DIST_C10D 1
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if GMSA_TORCH_AT_LEAST(2, 0)
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#if defined(USE_C10D_GLOO) && __has_include(<gloo/algorithm.h>)
#define GMSA_DIST_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(USE_C10D_NCCL)
#define GMSA_DIST_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace gmsa::dist {

namespace {

using Clock = std::chrono::steady_clock;
const char* kFaultKey = "gmsa/fault/";

#if GMSA_DIST_C10D
// LibTorch 2.0 split the collective implementations (c10d::Backend) from the dispatching
// c10d::ProcessGroup; on 1.13 ProcessGroupGloo/NCCL derive from ProcessGroup directly. The
// collective signatures we use are the same on both.
#if GMSA_TORCH_AT_LEAST(2, 0)
using C10dBackend = ::c10d::Backend;
#else
using C10dBackend = ::c10d::ProcessGroup;
#endif
#endif

std::string seconds(std::chrono::milliseconds t) { return fmt::format("{:g} s", t.count() / 1000.0); }

std::string first_line(const std::string& s) {
  const std::string line = s.substr(0, s.find('\n'));
  return line.empty() ? "(no message)" : line;
}

bool is_loopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "localhost" || addr == "::1";
}

// How long a failed rank waits for its peers to check in before naming the silent ones.
std::chrono::milliseconds grace(std::chrono::milliseconds timeout) {
  return std::clamp(timeout / 2, std::chrono::milliseconds(200), std::chrono::milliseconds(10000));
}

}  // namespace

struct PendingOp::State {
  std::string what;
  int64_t seq = 0;
  bool done = false;
  std::vector<torch::Tensor> keep_alive;
#if GMSA_DIST_C10D
  std::vector<c10::intrusive_ptr<::c10d::Work>> works;
#endif
};

struct ProcessGroup::Impl {
  int64_t rank = 0, world = 1;
  std::string backend = "none";
  torch::Device device = torch::kCPU;
  std::chrono::milliseconds timeout{0};
  std::string store_addr;
  int64_t seq = 0;  // operations issued, for messages
#if GMSA_DIST_C10D
  c10::intrusive_ptr<::c10d::Store> store;
  c10::intrusive_ptr<C10dBackend> pg;  // declared after the store: destroyed first
#endif

  [[noreturn]] void fail(const std::string& what, int64_t op_seq, const std::string& cause);
  std::shared_ptr<PendingOp::State> new_op(const std::string& what,
                                           const std::vector<torch::Tensor>& tensors);
  void check(const torch::Tensor& t, const std::string& what) const;
};

// ---- creation ----

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() = default;

std::unique_ptr<ProcessGroup> ProcessGroup::single(torch::Device device) {
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(std::move(impl)));
}

std::unique_ptr<ProcessGroup> ProcessGroup::from_env(const DistEnv& env, torch::Device device,
                                                     std::chrono::milliseconds timeout) {
  if (env.source == "single") return single(device);
  return create(env, device, timeout);
}

bool ProcessGroup::has_backend(const std::string& name) {
#if GMSA_DIST_GLOO
  if (name == "gloo") return true;
#endif
#if GMSA_DIST_NCCL
  if (name == "nccl") return true;
#endif
  return false;
}

#if GMSA_DIST_GLOO
namespace {
std::shared_ptr<::gloo::transport::Device> gloo_device(const DistEnv& env) {
  // GLOO_SOCKET_IFNAME picks the interface as in PyTorch (first of a comma list).
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    const std::string first = std::string(ifname).substr(0, std::string(ifname).find(','));
    return ::c10d::ProcessGroupGloo::createDeviceForInterface(first);
  }
  // One host talking to itself: loopback needs no resolvable host name.
  if (is_loopback(env.master_addr)) return ::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return ::c10d::ProcessGroupGloo::createDefaultDevice();
}
}  // namespace
#endif

std::unique_ptr<ProcessGroup> ProcessGroup::create(const DistEnv& env, torch::Device device,
                                                   std::chrono::milliseconds timeout) {
  GMSA_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size,
             "process group: rank {} is outside [0, world size {})", env.rank, env.world_size);
  GMSA_CHECK(timeout.count() > 0, "process group: the timeout must be positive");
#if !GMSA_DIST_C10D
  fail("process group: this LibTorch ({}) was built without distributed support (c10d)",
       compat::torch_version_string());
#else
  // Writing to a socket a dead peer closed must give an error, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  auto impl = std::make_unique<Impl>();
  impl->rank = env.rank;
  impl->world = env.world_size;
  impl->timeout = timeout;
  impl->store_addr = fmt::format("{}:{}", env.master_addr, env.master_port);
  const bool cuda = device.is_cuda();
  if (cuda && !device.has_index()) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  impl->device = device;
  impl->backend = cuda ? "nccl" : "gloo";
  GMSA_CHECK(has_backend(impl->backend), "process group: this LibTorch ({}) has no {} backend for {} tensors",
             compat::torch_version_string(), impl->backend, device.str());
  try {
    ::c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(env.master_port);
    o.isServer = env.rank == 0;
    o.numWorkers = static_cast<size_t>(env.world_size);
    o.waitWorkers = true;
    o.timeout = timeout;
    impl->store = c10::make_intrusive<::c10d::TCPStore>(env.master_addr, o);
  } catch (const std::exception& e) {
    fail("rendezvous at {} failed on rank {} of {} (timeout {}): {}. Check MASTER_ADDR/MASTER_PORT, "
         "that the port is free and that all {} processes started",
         impl->store_addr, env.rank, env.world_size, seconds(timeout), first_line(e.what()),
         env.world_size);
  }
  try {
#if GMSA_DIST_GLOO
    if (!cuda) {
      auto opts = ::c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(gloo_device(env));
      impl->pg = c10::make_intrusive<::c10d::ProcessGroupGloo>(impl->store, env.rank, env.world_size, opts);
    }
#endif
#if GMSA_DIST_NCCL
    if (cuda) {
      c10::cuda::set_device(device.index());
      // Blocking wait: a timed-out collective throws in wait() (which we turn into a message
      // naming the rank) instead of the watchdog aborting the process.
#if GMSA_TORCH_AT_LEAST(2, 2)
      ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
#else
      ::setenv("NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
#endif
      auto opts = ::c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      impl->pg = c10::make_intrusive<::c10d::ProcessGroupNCCL>(impl->store, env.rank, env.world_size, opts);
    }
#endif
  } catch (const std::exception& e) {
    fail("rendezvous at {} failed on rank {} of {} while connecting {} (timeout {}): {}. Check that all "
         "{} processes started and can reach each other", impl->store_addr, env.rank, env.world_size,
         impl->backend, seconds(timeout), first_line(e.what()), env.world_size);
  }
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(std::move(impl)));
#endif
}

int64_t ProcessGroup::rank() const { return impl_->rank; }
int64_t ProcessGroup::world_size() const { return impl_->world; }
const std::string& ProcessGroup::backend() const { return impl_->backend; }
torch::Device ProcessGroup::device() const { return impl_->device; }
std::chrono::milliseconds ProcessGroup::timeout() const { return impl_->timeout; }

// ---- failures ----

void ProcessGroup::report_failure(const std::string& reason) noexcept {
#if GMSA_DIST_C10D
  if (!impl_->store) return;
  try {
    const std::string v = "R" + first_line(reason);
    impl_->store->set(kFaultKey + std::to_string(impl_->rank), std::vector<uint8_t>(v.begin(), v.end()));
  } catch (...) {
  }
#else
  (void)reason;
#endif
}

void ProcessGroup::Impl::fail(const std::string& what, int64_t op_seq, const std::string& cause) {
  const std::string op = fmt::format("{} (collective #{})", what, op_seq);
#if GMSA_DIST_C10D
  // Check in ("C") and wait a little for the peers: those alive fail at about the same time and
  // check in too; the silent ones exited or hang. Peers that failed on their own left "R".
  std::vector<int64_t> silent;
  std::vector<std::string> reported;
  try {
    const std::string mine = "C" + op;
    store->set(kFaultKey + std::to_string(rank), std::vector<uint8_t>(mine.begin(), mine.end()));
    std::vector<bool> seen(world, false);
    seen[rank] = true;
    const auto deadline = Clock::now() + grace(timeout);
    for (;;) {
      bool all = true;
      for (int64_t r = 0; r < world; ++r) {
        if (seen[r] || !store->check({kFaultKey + std::to_string(r)})) {
          all = all && seen[r];
          continue;
        }
        seen[r] = true;
        auto v = store->get(kFaultKey + std::to_string(r));
        if (!v.empty() && v[0] == 'R')
          reported.push_back(fmt::format("rank {} failed: {}", r, std::string(v.begin() + 1, v.end())));
      }
      if (all || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (int64_t r = 0; r < world; ++r)
      if (!seen[r]) silent.push_back(r);
  } catch (const std::exception&) {
    if (rank != 0)
      gmsa::fail("{}: rank 0 (it hosts the rendezvous store at {}) is gone or hung (timeout {}); rank {} "
                 "stops. Cause: {}", op, store_addr, seconds(timeout), rank, first_line(cause));
  }
  std::string msg = op + ": ";
  if (!reported.empty()) msg += fmt::format("{}; ", fmt::join(reported, "; "));
  if (!silent.empty())
    msg += fmt::format("rank{} {} did not answer (exited or hung; timeout {}); ", silent.size() > 1 ? "s" : "",
                       fmt::join(silent, ", "), seconds(timeout));
  if (reported.empty() && silent.empty()) msg += "failed; ";
  gmsa::fail("{}rank {} stops. Cause: {}", msg, rank, first_line(cause));
#else
  gmsa::fail("{} failed on rank {}: {}", op, rank, first_line(cause));
#endif
}

// ---- operations ----

void ProcessGroup::Impl::check(const torch::Tensor& t, const std::string& what) const {
  GMSA_CHECK(t.defined(), "{}: undefined tensor", what);
  GMSA_CHECK(t.layout() == torch::kStrided && t.is_contiguous(), "{}: tensor of shape {} is not dense and "
             "contiguous", what, compat::shape_str(t.sizes()));
  GMSA_CHECK(backend == "none" || t.device() == device, "{}: tensor on {}, the process group works on {}",
             what, t.device().str(), device.str());
}

std::shared_ptr<PendingOp::State> ProcessGroup::Impl::new_op(const std::string& what,
                                                            const std::vector<torch::Tensor>& tensors) {
  for (const auto& t : tensors) check(t, what);
  auto op = std::make_shared<PendingOp::State>();
  op->what = what;
  op->seq = ++seq;
  op->keep_alive = tensors;
  return op;
}

void PendingOp::wait() {
  if (state_ && !state_->done) group_->wait(*state_);
}

void ProcessGroup::wait(PendingOp::State& op) {
#if GMSA_DIST_C10D
  // Gloo enforces the timeout itself; the longer limit here only guards against a wedged
  // worker. NCCL (blocking wait) enforces its own.
  const auto limit = impl_->backend == "gloo" ? impl_->timeout + std::chrono::seconds(10)
                                              : std::chrono::milliseconds(0);
  for (auto& w : op.works) {
    try {
      w->wait(limit);
    } catch (const std::exception& e) {
      op.done = true;
      impl_->fail(op.what, op.seq, e.what());
    }
  }
#endif
  op.done = true;
}

// Adds a launched c10d call to `op`; an error at launch gets the same message as one in wait().
#if GMSA_DIST_C10D
#define GMSA_LAUNCH(op, expr)                         \
  try {                                               \
    (op)->works.push_back(expr);                      \
  } catch (const std::exception& e) {                 \
    impl_->fail((op)->what, (op)->seq, e.what());     \
  }
#endif

PendingOp ProcessGroup::all_reduce_sum_async(const std::vector<torch::Tensor>& tensors,
                                             const std::string& what) {
  auto op = impl_->new_op(what, tensors);
#if GMSA_DIST_C10D
  if (impl_->pg) {
    ::c10d::AllreduceOptions o;
    o.reduceOp = ::c10d::ReduceOp::SUM;
    o.timeout = impl_->timeout;
    // One collective per tensor: a list in one c10d call means "one tensor per device".
    for (const auto& t : tensors) {
      std::vector<at::Tensor> one{t};
      GMSA_LAUNCH(op, impl_->pg->allreduce(one, o));
    }
  }
#endif
  return PendingOp(this, op);
}

void ProcessGroup::all_reduce_sum(const std::vector<torch::Tensor>& tensors, const std::string& what) {
  all_reduce_sum_async(tensors, what).wait();
}

int64_t ProcessGroup::all_reduce_sum_int(int64_t value, const std::string& what) {
  return all_reduce_sum_ints({value}, what).front();
}

std::vector<int64_t> ProcessGroup::all_reduce_sum_ints(const std::vector<int64_t>& values,
                                                       const std::string& what) {
  if (!distributed() || values.empty()) return values;
  auto t = torch::tensor(values, torch::kLong).to(impl_->device);
  all_reduce_sum({t}, what);
  t = t.cpu();
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

double ProcessGroup::all_reduce_sum_double(double value, const std::string& what) {
  if (!distributed()) return value;
  auto t = torch::full({1}, value, torch::TensorOptions().dtype(torch::kDouble).device(impl_->device));
  all_reduce_sum({t}, what);
  return t.item<double>();
}

PendingOp ProcessGroup::broadcast_async(const std::vector<torch::Tensor>& tensors, int64_t root,
                                        const std::string& what) {
  GMSA_CHECK(root >= 0 && root < impl_->world, "{}: root rank {} is outside [0, {})", what, root, impl_->world);
  auto op = impl_->new_op(what, tensors);
#if GMSA_DIST_C10D
  if (impl_->pg) {
    ::c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    o.timeout = impl_->timeout;
    for (const auto& t : tensors) {
      std::vector<at::Tensor> one{t};
      GMSA_LAUNCH(op, impl_->pg->broadcast(one, o));
    }
  }
#endif
  return PendingOp(this, op);
}

void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors, int64_t root, const std::string& what) {
  broadcast_async(tensors, root, what).wait();
}

void ProcessGroup::barrier(const std::string& what) {
  if (!distributed()) return;
  // A one-element all-reduce on our own device: NCCL's barrier() would have to guess one.
  all_reduce_sum({torch::zeros({1}, torch::TensorOptions().device(impl_->device))}, what);
}

namespace {
void check_flat_pair(const torch::Tensor& big, const torch::Tensor& small, int64_t world,
                     const std::string& what) {
  GMSA_CHECK(big.defined() && small.defined(), "{}: undefined tensor", what);
  GMSA_CHECK(big.numel() == world * small.numel(), "{}: the flat buffer has {} elements, expected "
             "world size {} x {}", what, big.numel(), world, small.numel());
  GMSA_CHECK(big.scalar_type() == small.scalar_type(), "{}: dtypes differ ({} vs {})", what,
             c10::toString(big.scalar_type()), c10::toString(small.scalar_type()));
}
}  // namespace

void ProcessGroup::reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output,
                                      const std::string& what) {
  check_flat_pair(input, output, impl_->world, what);
  const int64_t n = output.numel();
  torch::NoGradGuard no_grad;
  if (impl_->backend == "nccl") {
#if GMSA_DIST_NCCL
    auto op = impl_->new_op(what, {input, output});
    ::c10d::ReduceScatterOptions o;
    o.reduceOp = ::c10d::ReduceOp::SUM;
    o.timeout = impl_->timeout;
    at::Tensor in = input, out = output;
    GMSA_LAUNCH(op, impl_->pg->_reduce_scatter_base(out, in, o));
    PendingOp(this, op).wait();
#endif
    return;
  }
  // Gloo (and the single group): all-reduce the whole buffer, keep our chunk.
  all_reduce_sum({input}, what);
  output.view(-1).copy_(input.view(-1).narrow(0, impl_->rank * n, n));
}

void ProcessGroup::all_gather(const torch::Tensor& input, const torch::Tensor& output,
                              const std::string& what) {
  check_flat_pair(output, input, impl_->world, what);
  torch::NoGradGuard no_grad;
  if (!distributed()) {
    output.view(-1).copy_(input.view(-1));
    return;
  }
  auto op = impl_->new_op(what, {input, output});
#if GMSA_DIST_C10D
  ::c10d::AllgatherOptions o;
  o.timeout = impl_->timeout;
  at::Tensor in = input, out = output;
  if (impl_->backend == "nccl") {
    GMSA_LAUNCH(op, impl_->pg->_allgather_base(out, in, o));
  } else {
    // Gloo 1.13 lacks _allgather_base: gather into views of the flat output.
    const int64_t n = input.numel();
    std::vector<std::vector<at::Tensor>> outs(1);
    for (int64_t r = 0; r < impl_->world; ++r) outs[0].push_back(out.view(-1).narrow(0, r * n, n).view(in.sizes()));
    std::vector<at::Tensor> ins{in};
    GMSA_LAUNCH(op, impl_->pg->allgather(outs, ins, o));
  }
#endif
  PendingOp(this, op).wait();
}

}  // namespace gmsa::dist
