// CPU emulation of the CUDA features our kernels use, so that the real kernel sources run in
// CI (no GPU there). Each thread of a block is a fiber (ucontext) on one OS thread; warp
// shuffles and __syncthreads are rendezvous points where the scheduler waits for every thread
// concerned, so a shuffle reached by only part of a warp (divergence) or a barrier some threads
// never reach is reported instead of hanging. Kernels with no such call run thread after thread
// without fibers (the caller says which). Atomics are plain read-modify-writes (one OS thread).
// Float products and sums are never contracted into FMAs (build with -ffp-contract=off), as on
// the device, where the kernels are compiled with --fmad=false (gpu_sc._kernels.COMPILE_OPTIONS).
#pragma once

#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct gsc_emu_dim3 {
    unsigned int x, y, z;
};
static gsc_emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

// ------------------------------------------------------------------ bit casts and rounding
template <typename To, typename From>
static inline To gsc_emu_bits(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit cast between types of one size");
    To out;
    std::memcpy(&out, &v, sizeof(To));
    return out;
}
static inline long long __double_as_longlong(double v) { return gsc_emu_bits<long long>(v); }
static inline double __longlong_as_double(long long v) { return gsc_emu_bits<double>(v); }
static inline unsigned int __float_as_uint(float v) { return gsc_emu_bits<unsigned int>(v); }
static inline float __uint_as_float(unsigned int v) { return gsc_emu_bits<float>(v); }
static inline int __float_as_int(float v) { return gsc_emu_bits<int>(v); }
static inline float __int_as_float(int v) { return gsc_emu_bits<float>(v); }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }

// ------------------------------------------------------------------ atomics (one OS thread)
template <typename T>
static inline T atomicAdd(T* p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
}

// ------------------------------------------------------------------ fibers and rendezvous
namespace gsc_emu {

enum State { RUNNABLE, AT_SHUFFLE, AT_BARRIER, DONE };
enum Shuffle { XOR, DOWN, UP, IDX, BALLOT };

struct Lane {
    ucontext_t ctx;   // only to start the fiber on its own stack
    jmp_buf resume;   // where it yielded; _setjmp/_longjmp switch without a signal-mask syscall
    bool started;
    State state;
    gsc_emu_dim3 tid;
    unsigned long long slot;  // the value this lane offers at a shuffle
    int kind, arg, size;
    unsigned int mask;
};

struct Launch {
    std::vector<Lane> lanes;
    std::vector<unsigned long long> snapshot;  // the offered values of each resolved shuffle
    std::vector<char> stacks;
    ucontext_t scheduler;
    jmp_buf back;  // the scheduler, waiting for the running fiber to yield or finish
    int current = -1;
    bool fibers = false;
    void (*thunk)(void**) = nullptr;
    void** argv = nullptr;
    std::string error;
};

static Launch* g = nullptr;
static sigjmp_buf g_fault_jump;
static void* volatile g_fault_addr = nullptr;
constexpr size_t STACK = 64 * 1024;
constexpr int WARP = 32;

// The running lane gives control back to the scheduler; returns when it is resumed.
static void yield_lane() {
    Lane& me = g->lanes[g->current];
    if (!_setjmp(me.resume)) _longjmp(g->back, 1);
}

static void fail(const std::string& what) {
    // Called on a lane: record, mark, and leave for the scheduler, which stops the launch.
    if (g->error.empty()) g->error = what;
    if (g->fibers && g->current >= 0) {
        g->lanes[g->current].state = DONE;
        _longjmp(g->back, 1);  // never resumed
    }
}

template <typename T>
static T exchange(T v, int kind, int arg, unsigned int mask) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of at most 8 bytes");
    if (!g->fibers) {
        fail("a warp shuffle in a kernel launched without fibers (declare it in the emulator)");
        return v;
    }
    Lane& me = g->lanes[g->current];
    me.slot = 0;
    std::memcpy(&me.slot, &v, sizeof(T));
    me.kind = kind;
    me.arg = arg;
    me.size = (int)sizeof(T);
    me.mask = mask;
    me.state = AT_SHUFFLE;
    yield_lane();
    const int id = g->current;
    const int lane = id % WARP, base = id - lane;
    int src = lane;
    switch (kind) {
        case XOR: src = lane ^ arg; break;
        case DOWN: src = lane + arg < WARP ? lane + arg : lane; break;
        case UP: src = lane - arg >= 0 ? lane - arg : lane; break;
        case IDX: src = arg % WARP; break;
    }
    T out;
    std::memcpy(&out, &g->snapshot[base + src], sizeof(T));
    return out;
}

static void entry() {
    g->thunk(g->argv);
    g->lanes[g->current].state = DONE;
    _longjmp(g->back, 1);  // a finished fiber never returns through uc_link
}

// Every lane of a warp waits at a shuffle: check they agree, publish the values, release them.
static bool resolve_warps(int n) {
    bool any = false;
    for (int base = 0; base < n; base += WARP) {
        const int end = base + WARP < n ? base + WARP : n;
        int at = 0;
        for (int i = base; i < end; ++i) at += g->lanes[i].state == AT_SHUFFLE;
        if (at == 0) continue;
        if (at != WARP) {
            char msg[200];
            std::snprintf(msg, sizeof msg,
                          "divergent warp shuffle: %d of the %d threads of warp %d reached it "
                          "(block %u, %u, %u); a full-mask shuffle needs all 32",
                          at, end - base, base / WARP, blockIdx.x, blockIdx.y, blockIdx.z);
            g->error = msg;
            return false;
        }
        const Lane& first = g->lanes[base];
        for (int i = base; i < end; ++i) {
            const Lane& l = g->lanes[i];
            if (l.kind != first.kind || l.arg != first.arg || l.size != first.size) {
                g->error = "lanes of one warp met at different shuffles";
                return false;
            }
            if (l.mask != 0xffffffffu) {
                g->error = "a shuffle with a partial mask (the emulator handles full warps only)";
                return false;
            }
        }
        for (int i = base; i < end; ++i) {
            g->snapshot[i] = g->lanes[i].slot;
            g->lanes[i].state = RUNNABLE;
        }
        any = true;
    }
    return any;
}

static bool run_block_fibers(int n) {
    for (int i = 0; i < n; ++i) {
        Lane& l = g->lanes[i];
        l.state = RUNNABLE;
        l.started = false;
        getcontext(&l.ctx);
        l.ctx.uc_stack.ss_sp = g->stacks.data() + (size_t)i * STACK;
        l.ctx.uc_stack.ss_size = STACK;
        l.ctx.uc_link = &g->scheduler;
        makecontext(&l.ctx, entry, 0);
    }
    for (;;) {
        for (int i = 0; i < n; ++i) {
            if (g->lanes[i].state != RUNNABLE) continue;
            Lane& l = g->lanes[i];
            g->current = i;
            threadIdx = l.tid;
            if (!_setjmp(g->back)) {
                if (l.started) _longjmp(l.resume, 1);
                l.started = true;
                swapcontext(&g->scheduler, &l.ctx);  // first entry onto the fiber's stack
            }
            if (!g->error.empty()) return false;
        }
        g->current = -1;
        int done = 0, barrier = 0;
        for (int i = 0; i < n; ++i) {
            done += g->lanes[i].state == DONE;
            barrier += g->lanes[i].state == AT_BARRIER;
        }
        if (done == n) return true;
        if (resolve_warps(n)) continue;
        if (!g->error.empty()) return false;
        if (barrier + done == n && done == 0) {
            for (int i = 0; i < n; ++i) g->lanes[i].state = RUNNABLE;
            continue;
        }
        g->error = "__syncthreads not reached by every thread of the block (deadlock on a GPU)";
        return false;
    }
}

static void on_fault(int, siginfo_t* info, void*) {
    g_fault_addr = info->si_addr;
    siglongjmp(g_fault_jump, 1);
}

static int run(void (*thunk)(void**), const unsigned* grid, const unsigned* block, void** argv,
               int fibers, char* err, int err_len, unsigned long long* fault_addr) {
    Launch launch;
    g = &launch;
    launch.thunk = thunk;
    launch.argv = argv;
    launch.fibers = fibers != 0;
    blockDim = {block[0], block[1], block[2]};
    gridDim = {grid[0], grid[1], grid[2]};
    const int n = (int)(block[0] * block[1] * block[2]);
    launch.lanes.resize(n);
    launch.snapshot.resize(n);
    for (int i = 0; i < n; ++i)
        launch.lanes[i].tid = {i % block[0], (i / block[0]) % block[1], i / (block[0] * block[1])};
    if (launch.fibers) launch.stacks.resize((size_t)n * STACK);

    struct sigaction act, old_segv, old_bus;
    std::memset(&act, 0, sizeof act);
    act.sa_sigaction = on_fault;
    act.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&act.sa_mask);
    sigaction(SIGSEGV, &act, &old_segv);
    sigaction(SIGBUS, &act, &old_bus);
    int rc = 0;
    if (sigsetjmp(g_fault_jump, 1) == 0) {
        for (unsigned bz = 0; bz < grid[2] && rc == 0; ++bz)
            for (unsigned by = 0; by < grid[1] && rc == 0; ++by)
                for (unsigned bx = 0; bx < grid[0] && rc == 0; ++bx) {
                    blockIdx = {bx, by, bz};
                    if (launch.fibers) {
                        if (!run_block_fibers(n)) rc = 1;
                    } else {
                        for (int i = 0; i < n && launch.error.empty(); ++i) {
                            launch.current = i;
                            threadIdx = launch.lanes[i].tid;
                            thunk(argv);
                        }
                        if (!launch.error.empty()) rc = 1;
                    }
                }
    } else {
        rc = 2;  // invalid memory access; the caller names the argument from the address
        *fault_addr = (unsigned long long)(uintptr_t)g_fault_addr;
        launch.error = "invalid memory access";
    }
    sigaction(SIGSEGV, &old_segv, nullptr);
    sigaction(SIGBUS, &old_bus, nullptr);
    if (rc) std::snprintf(err, (size_t)err_len, "%s", launch.error.c_str());
    g = nullptr;
    return rc;
}

// ------------------------------------------------------------------ kernel signatures
template <typename T>
static std::string code_of() {
    using U = std::remove_cv_t<T>;
    std::string k = std::is_floating_point<U>::value ? "f"
                    : std::is_same<U, bool>::value   ? "b"
                    : std::is_signed<U>::value       ? "i"
                                                     : "u";
    return k + std::to_string(sizeof(U));
}

template <typename A>
static std::string param_code() {
    if constexpr (std::is_pointer<A>::value) {
        using E = std::remove_pointer_t<A>;
        return std::string("P") + (std::is_const<E>::value ? "c" : "m") + code_of<E>();
    } else {
        return "S" + code_of<A>();
    }
}

template <typename... A>
static std::string signature(void (*)(A...)) {
    std::string s;
    ((s += param_code<A>() + ","), ...);
    if (!s.empty()) s.pop_back();
    return s;
}

template <typename... A, size_t... I>
static void call(void (*k)(A...), void** argv, std::index_sequence<I...>) {
    k(*static_cast<std::remove_reference_t<A>*>(argv[I])...);
}

}  // namespace gsc_emu

template <typename T>
static inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int = 32) {
    return gsc_emu::exchange(v, gsc_emu::XOR, lane_mask, mask);
}
template <typename T>
static inline T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int = 32) {
    return gsc_emu::exchange(v, gsc_emu::DOWN, (int)delta, mask);
}
template <typename T>
static inline T __shfl_up_sync(unsigned int mask, T v, unsigned int delta, int = 32) {
    return gsc_emu::exchange(v, gsc_emu::UP, (int)delta, mask);
}
template <typename T>
static inline T __shfl_sync(unsigned int mask, T v, int src, int = 32) {
    return gsc_emu::exchange(v, gsc_emu::IDX, src, mask);
}
static inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
    // a rendezvous like a shuffle; then every lane reads the whole warp's offers
    gsc_emu::exchange<unsigned long long>(predicate ? 1ull : 0ull, gsc_emu::BALLOT, 0, mask);
    const int base = gsc_emu::g->current - gsc_emu::g->current % gsc_emu::WARP;
    unsigned int bits = 0;
    for (int i = 0; i < gsc_emu::WARP; ++i)
        if (gsc_emu::g->snapshot[base + i]) bits |= 1u << i;
    return bits;
}
static inline int __ffs(unsigned int x) { return __builtin_ffs((int)x); }
static inline void __syncthreads() {
    if (!gsc_emu::g->fibers) {
        gsc_emu::fail("__syncthreads in a kernel launched without fibers");
        return;
    }
    gsc_emu::Lane& me = gsc_emu::g->lanes[gsc_emu::g->current];
    me.state = gsc_emu::AT_BARRIER;
    gsc_emu::yield_lane();
}

// One exported launcher and signature per instantiation (the harness writes these lines).
#define GSC_EMU_EXPORT(N, ...)                                                               \
    static void gsc_emu_thunk_##N(void** argv) {                                             \
        gsc_emu::call(&__VA_ARGS__, argv,                                                    \
                      std::make_index_sequence<gsc_emu_arity(&__VA_ARGS__)>{});              \
    }                                                                                        \
    extern "C" int gsc_emu_launch_##N(const unsigned* grid, const unsigned* block,           \
                                      void** argv, int fibers, char* err, int err_len,       \
                                      unsigned long long* fault) {                           \
        return gsc_emu::run(gsc_emu_thunk_##N, grid, block, argv, fibers, err, err_len,      \
                            fault);                                                          \
    }                                                                                        \
    extern "C" const char* gsc_emu_signature_##N() {                                         \
        static const std::string s = gsc_emu::signature(&__VA_ARGS__);                      \
        return s.c_str();                                                                    \
    }

template <typename... A>
constexpr size_t gsc_emu_arity(void (*)(A...)) {
    return sizeof...(A);
}
