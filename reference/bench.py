#!/usr/bin/env python3
"""Steady-state training throughput of the PyTorch reference (images/s).

    python reference/bench.py [--threads 2] [--batch 64] [--warmup 10] [--steps 100]
        [--repeats 3] [--configs stl-eager,mtl-eager,mtl-batched] [--device cpu|cuda]
        [--graphs]

One training step = zero_grad, forward, loss, backward, SGD step on a batch drawn from the
embedded MNIST training split (random inputs if data/mnist is missing), then the loss read
back to the host (`loss.item()`): sskernel's trainer and its bench read the loss every
step, so both sides do the same per-step work (on a GPU that read is a synchronisation).
`--graphs` (cuda only) captures the whole step — forward, loss, backward, optimiser — in
one CUDA graph (torch.cuda.graph over static input tensors, after a warm-up on a side
stream, as PyTorch's "whole network capture" recipe) and replays it per step; the batch is
copied into the static inputs first. For each configuration: --warmup untimed steps, then
--repeats timings of --steps steps; the median is reported. Output, one line per
configuration (machine-readable, parsed by scripts/compare-cpu.sh):

    torch stl eager images_per_s=1234.5 min=... max=... threads=2 batch=64 steps=100 device=cpu graphs=0
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train as ref  # noqa: E402


def load_batches(device, batch, n_batches, seed):
    path = os.path.join(ref.EMBEDDED_DIR, "images-idx3-ubyte.gz")
    if os.path.isfile(path):
        split, _ = ref.load_data("mnist", None, ref.EMBEDDED_DIR)
        x, y = ref.to_tensors(*split["train"], device)
    else:
        print(f"# {path} missing: random inputs", file=sys.stderr)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(8000, 1, 28, 28, generator=g).to(device)
        y = torch.randint(0, 10, (8000,), generator=g).to(device)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g).to(device)
    out = []
    for k in range(n_batches):
        i = (k * batch) % (len(x) - batch + 1)
        idx = perm[i:i + batch]
        out.append((x[idx], y[idx]))
    return out


def bench(mode, variant, device, batch, warmup, steps, repeats, seed, graphs):
    torch.manual_seed(seed)
    model = ref.build_model(mode, variant).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.5)
    batches = load_batches(device, batch, 64, seed)

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    if graphs:
        run = captured_step(step, batches, device)
    else:
        def run(n, offset):
            for k in range(n):
                xb, yb = batches[(offset + k) % len(batches)]
                step(xb, yb).item()

    run(warmup, 0)
    ref.sync(device)
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        run(steps, warmup + r * steps)
        ref.sync(device)
        rates.append(steps * batch / (time.perf_counter() - t0))
    return statistics.median(rates), min(rates), max(rates)


def captured_step(step, batches, device):
    """The whole training step as one CUDA graph; returns run(n, offset) like the eager
    loop: copy the batch into the static inputs, replay, read the loss back."""
    static_x = batches[0][0].clone()
    static_y = batches[0][1].clone()
    # Warm-up on a side stream (allocates the optimiser state and autograd buffers
    # outside the capture), as torch.cuda.graphs requires.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(static_x, static_y)

    def run(n, offset):
        for k in range(n):
            xb, yb = batches[(offset + k) % len(batches)]
            static_x.copy_(xb)
            static_y.copy_(yb)
            graph.replay()
            static_loss.item()

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default="stl-eager,mtl-eager,mtl-batched")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--graphs", action="store_true",
                    help="capture the whole step in a CUDA graph (cuda only)")
    args = ap.parse_args()
    if args.graphs and args.device != "cuda":
        ap.error("--graphs needs --device cuda")
    ref.set_threads(args.threads)
    device = torch.device(args.device)
    print(f"# torch {torch.__version__}, {ref.device_name(device, args.threads)}, "
          f"intra-op threads {torch.get_num_threads()}, interop {torch.get_num_interop_threads()}",
          flush=True)
    for cfg in args.configs.split(","):
        mode, variant = cfg.split("-")
        med, lo, hi = bench(mode, variant, device, args.batch, args.warmup, args.steps,
                            args.repeats, args.seed, args.graphs)
        print(f"torch {mode} {variant} images_per_s={med:.1f} min={lo:.1f} max={hi:.1f} "
              f"threads={args.threads} batch={args.batch} steps={args.steps} "
              f"device={args.device} graphs={int(args.graphs)}", flush=True)


if __name__ == "__main__":
    main()
