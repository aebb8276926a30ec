// kernels/sim_runtime.cpp — the kernel simulator's launcher (see sim.h, README.md).
//
// Execution model. Every OS worker thread that calls ssk_sim_run_blocks runs the
// blocks it is given one after another; the threads of one block are fibers on
// that OS thread, each with its own stack. Fibers switch with a hand-written
// x86-64 register switch (callee-saved registers + rsp, no system call); other
// architectures, or a build with SSKERNEL_SIM_UCONTEXT=1 (build.rs then defines
// SSK_SIM_UCONTEXT), use ucontext (slower: a sigprocmask system call per switch).
//
// Scheduling of a block, in rounds: the runnable fibers are resumed one at a time
// in a seeded random order, each running until it blocks (at __syncthreads, at a
// warp operation, or at its end). A warp operation completes when the last live
// lane of the warp arrives; its lanes become runnable in the next round. When no
// fiber is runnable and every live fiber waits at __syncthreads, the barrier
// opens. Anything else is a deadlock and fails the block with a message.
// So code after a barrier never runs before every thread reached it, and a kernel
// that relies on a missing barrier reads shared memory that another thread has
// not written yet (running one fiber at a time, in shuffled order, makes that
// deterministic for a fixed seed).
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__) && !defined(SSK_SIM_UCONTEXT)
#define SSK_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

__thread const ssk_fiber_pub* ssk_self;
__thread uint3 ssk_block_idx;
__thread dim3 ssk_block_dim;
__thread dim3 ssk_grid_dim;
__thread int ssk_sim_tf32;

namespace {

typedef void (*trampoline_fn)(void**);

enum FiberState { RUNNABLE, AT_BARRIER, AT_WARP, DONE };

// Fiber stacks: 64 KiB each plus a PROT_NONE guard page below, so a stack
// overflow faults instead of corrupting a neighbour.
const size_t STACK_BYTES = 64 * 1024;

struct Fiber {
    ssk_fiber_pub pub;
    FiberState state;
    uint64_t shfl_value;
    uint64_t shfl_result;
    int shfl_src;
    char* stack_lo;
#ifdef SSK_ASM_SWITCH
    void* sp;
#else
    ucontext_t ctx;
#endif
};

struct Warp {
    int size;     // lanes in this warp (the last warp of a block may be partial)
    int live;     // lanes that have not returned
    int arrived;  // lanes waiting at the current warp operation
};

// One per OS thread.
struct Worker {
    Fiber* fibers = nullptr;
    int capacity = 0;
    Warp* warps = nullptr;
    int n_threads = 0;
    Fiber* current = nullptr;
    trampoline_fn entry = nullptr;
    void** args = nullptr;
    unsigned char* smem = nullptr;
    size_t smem_capacity = 0;
    bool failed = false;
    char message[400];
#ifdef SSK_ASM_SWITCH
    void* sched_sp = nullptr;
#else
    ucontext_t sched_ctx;
#endif
};

__thread Worker* tls_worker;

Worker& worker() {
    if (!tls_worker) tls_worker = new Worker();  // lives as long as its OS thread
    return *tls_worker;
}

}  // namespace

#ifdef SSK_ASM_SWITCH
// void ssk_switch(void** save_sp, void* new_sp): saves the callee-saved registers on
// the current stack, stores rsp in *save_sp, loads new_sp and restores from there.
extern "C" void ssk_switch(void** save_sp, void* new_sp);
extern "C" __attribute__((visibility("hidden"), noreturn)) void ssk_fiber_main();
asm(R"(
    .text
    .globl ssk_switch
    .hidden ssk_switch
    .type ssk_switch, @function
ssk_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ssk_switch, .-ssk_switch

    .globl ssk_fiber_start
    .hidden ssk_fiber_start
    .type ssk_fiber_start, @function
ssk_fiber_start:
    andq $-16, %rsp
    call ssk_fiber_main
    ud2
    .size ssk_fiber_start, .-ssk_fiber_start
)");
extern "C" void ssk_fiber_start();
#endif

namespace {

// Back to the scheduler (from a fiber).
inline void yield_to_scheduler(Worker& w, Fiber* f) {
#ifdef SSK_ASM_SWITCH
    ssk_switch(&f->sp, w.sched_sp);
#else
    swapcontext(&f->ctx, &w.sched_ctx);
#endif
}

inline void resume(Worker& w, Fiber* f) {
    w.current = f;
    ssk_self = &f->pub;
#ifdef SSK_ASM_SWITCH
    ssk_switch(&w.sched_sp, f->sp);
#else
    swapcontext(&w.sched_ctx, &f->ctx);
#endif
}

}  // namespace

extern "C" __attribute__((visibility("hidden"), noreturn)) void ssk_fiber_main() {
    Worker& w = worker();
    Fiber* f = w.current;
    w.entry(w.args);
    f->state = DONE;
    w.warps[f->pub.warp].live -= 1;
    yield_to_scheduler(w, f);
    abort();  // a finished fiber is never resumed
}

#ifndef SSK_ASM_SWITCH
static void ucontext_entry() { ssk_fiber_main(); }
#endif

namespace {

bool ensure_fibers(Worker& w, int n) {
    if (n <= w.capacity) return true;
    Fiber* fibers = static_cast<Fiber*>(realloc(w.fibers, sizeof(Fiber) * n));
    if (!fibers) return false;
    w.fibers = fibers;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = w.capacity; i < n; i++) {
        void* m = mmap(nullptr, STACK_BYTES + page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return false;
        mprotect(m, page, PROT_NONE);
        w.fibers[i].stack_lo = static_cast<char*>(m) + page;
        w.capacity = i + 1;
    }
    Warp* warps = static_cast<Warp*>(realloc(w.warps, sizeof(Warp) * ((n + 31) / 32)));
    if (!warps) return false;
    w.warps = warps;
    return true;
}

// A fresh start of fiber f at ssk_fiber_main.
void prepare(Worker& w, Fiber* f) {
#ifdef SSK_ASM_SWITCH
    (void)w;
    uintptr_t top = (uintptr_t)(f->stack_lo + STACK_BYTES) & ~(uintptr_t)15;
    uint64_t* s = reinterpret_cast<uint64_t*>(top - 64);
    for (int i = 0; i < 6; i++) s[i] = 0;  // r15 r14 r13 r12 rbx rbp
    s[6] = (uint64_t)(uintptr_t)&ssk_fiber_start;
    s[7] = 0;
    f->sp = s;
#else
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack_lo;
    f->ctx.uc_stack.ss_size = STACK_BYTES;
    f->ctx.uc_link = nullptr;
    makecontext(&f->ctx, ucontext_entry, 0);
    (void)w;
#endif
}

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fail(Worker& w, const char* fmt_msg) {
    if (!w.failed) {
        w.failed = true;
        snprintf(w.message, sizeof w.message, "%s", fmt_msg);
    }
}

// Runs one block to completion; false (with w.message) on a failure.
bool run_block(Worker& w, uint64_t seed, int* order) {
    const int n = w.n_threads;
    for (int t = 0; t < n; t++) {
        Fiber* f = &w.fibers[t];
        f->pub.thread_idx.x = t % ssk_block_dim.x;
        f->pub.thread_idx.y = (t / ssk_block_dim.x) % ssk_block_dim.y;
        f->pub.thread_idx.z = t / (ssk_block_dim.x * ssk_block_dim.y);
        f->pub.lane = t % 32;
        f->pub.warp = t / 32;
        f->state = RUNNABLE;
        prepare(w, f);
        order[t] = t;
    }
    for (int i = 0; i < (n + 31) / 32; i++) {
        int size = n - 32 * i < 32 ? n - 32 * i : 32;
        w.warps[i] = Warp{size, size, 0};
    }
    int runnable = n;
    for (;;) {
        // Fisher–Yates over this round's runnable fibers.
        for (int i = runnable - 1; i > 0; i--) {
            int j = (int)(splitmix(seed) % (uint64_t)(i + 1));
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (int i = 0; i < runnable; i++) {
            Fiber* f = &w.fibers[order[i]];
            if (f->state != RUNNABLE) continue;
            resume(w, f);
            if (w.failed) return false;
        }
        runnable = 0;
        int at_barrier = 0, at_warp = 0, done = 0;
        for (int t = 0; t < n; t++) {
            switch (w.fibers[t].state) {
                case RUNNABLE: order[runnable++] = t; break;
                case AT_BARRIER: at_barrier++; break;
                case AT_WARP: at_warp++; break;
                case DONE: done++; break;
            }
        }
        if (runnable > 0) continue;
        if (done == n) return true;
        if (at_warp == 0) {
            // Every live thread reached __syncthreads: the barrier opens.
            for (int t = 0; t < n; t++) {
                if (w.fibers[t].state == AT_BARRIER) {
                    w.fibers[t].state = RUNNABLE;
                    order[runnable++] = t;
                }
            }
            continue;
        }
        char msg[200];
        snprintf(msg, sizeof msg,
                 "deadlock: %d thread(s) wait at a warp operation, %d at __syncthreads, "
                 "%d returned (divergent barrier or shuffle?)",
                 at_warp, at_barrier, done);
        fail(w, msg);
        return false;
    }
}

}  // namespace

extern "C" {

void ssk_syncthreads(void) {
    Worker& w = worker();
    Fiber* f = w.current;
    f->state = AT_BARRIER;
    yield_to_scheduler(w, f);
}

uint64_t ssk_warp_exchange(unsigned mask, uint64_t value, int src_lane) {
    Worker& w = worker();
    Fiber* f = w.current;
    Warp& warp = w.warps[f->pub.warp];
    if (mask != 0xffffffffu) {
        ssk_fail("warp operation with a partial mask (the simulator supports the full mask only)");
    }
    if (warp.live != warp.size) {
        ssk_fail("full-mask warp operation after lanes of the warp returned");
    }
    f->shfl_value = value;
    f->shfl_src = src_lane;
    warp.arrived += 1;
    if (warp.arrived < warp.live) {
        f->state = AT_WARP;
        yield_to_scheduler(w, f);
        return f->shfl_result;
    }
    // Last lane in: deliver every lane's value and wake the others.
    Fiber* lanes = &w.fibers[f->pub.warp * 32];
    for (int l = 0; l < warp.size; l++) {
        Fiber* g = &lanes[l];
        int s = g->shfl_src;  // a lane of this warp, 0..31 (sim.h computes it)
        g->shfl_result = (s >= 0 && s < warp.size) ? lanes[s].shfl_value : g->shfl_value;
        if (g != f) g->state = RUNNABLE;
    }
    warp.arrived = 0;
    return f->shfl_result;
}

void* ssk_dynamic_smem(void) { return worker().smem; }

void ssk_fail(const char* msg) {
    Worker& w = worker();
    fail(w, msg);
    Fiber* f = w.current;
    f->state = DONE;
    yield_to_scheduler(w, f);  // never resumed: the block is abandoned
    abort();
}

// Runs blocks [block_begin, block_end) of a grid on the calling OS thread.
// `entry` is a generated trampoline: it unpacks `args` (cuLaunchKernel's layout:
// args[i] points at the i-th argument's value) and calls the kernel.
// Returns 0, or -1 with a message in err (and *failed_block set).
// One launch, as src/backend/sim/mod.rs describes it (`SimLaunch`, same layout).
typedef struct {
    trampoline_fn entry;
    void** args;
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_bytes;
    uint64_t seed;
    int tf32;  // the GEMM core's TF32 tensor-core variant (sim.h emulates it)
} ssk_sim_launch;

int ssk_sim_run_blocks(const ssk_sim_launch* launch, uint64_t block_begin, uint64_t block_end,
                       uint64_t* failed_block, char* err, size_t err_len) {
    trampoline_fn entry = launch->entry;
    void** args = launch->args;
    const unsigned* grid = launch->grid;
    const unsigned* block = launch->block;
    const unsigned shared_bytes = launch->shared_bytes;
    const uint64_t seed = launch->seed;
    Worker& w = worker();
    const uint64_t n64 = (uint64_t)block[0] * block[1] * block[2];
    if (n64 == 0 || n64 > 1024) {
        snprintf(err, err_len, "block of %llu threads (CUDA allows 1..1024)", (unsigned long long)n64);
        *failed_block = block_begin;
        return -1;
    }
    const int n = (int)n64;
    if (!ensure_fibers(w, n)) {
        snprintf(err, err_len, "out of memory for %d fiber stacks", n);
        *failed_block = block_begin;
        return -1;
    }
    if (shared_bytes > w.smem_capacity) {
        free(w.smem);
        w.smem = static_cast<unsigned char*>(aligned_alloc(64, (shared_bytes + 63) / 64 * 64));
        w.smem_capacity = w.smem ? shared_bytes : 0;
        if (!w.smem) {
            snprintf(err, err_len, "out of memory for %u bytes of shared memory", shared_bytes);
            *failed_block = block_begin;
            return -1;
        }
    }
    int* order = static_cast<int*>(malloc(sizeof(int) * n));
    w.n_threads = n;
    w.entry = entry;
    w.args = args;
    w.failed = false;
    ssk_block_dim = dim3{block[0], block[1], block[2]};
    ssk_grid_dim = dim3{grid[0], grid[1], grid[2]};
    ssk_sim_tf32 = launch->tf32;
    int rc = 0;
    for (uint64_t b = block_begin; b < block_end; b++) {
        ssk_block_idx.x = (unsigned)(b % grid[0]);
        ssk_block_idx.y = (unsigned)((b / grid[0]) % grid[1]);
        ssk_block_idx.z = (unsigned)(b / ((uint64_t)grid[0] * grid[1]));
        if (shared_bytes) memset(w.smem, 0xFF, shared_bytes);  // NaN as float
        uint64_t s = seed ^ (b * 0xD1B54A32D192ED03ull);
        if (!run_block(w, s, order)) {
            snprintf(err, err_len, "%s", w.message);
            *failed_block = b;
            rc = -1;
            break;
        }
    }
    free(order);
    ssk_self = nullptr;
    return rc;
}

}  // extern "C"
