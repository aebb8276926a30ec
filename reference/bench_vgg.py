#!/usr/bin/env python3
"""Forward + backward throughput (images/s) of the paper's CIFAR-10 net in PyTorch,
the same net as `cargo bench --bench vgg`: VGG-16 with batchnorm (13 3x3 pad-1 convs,
widths 64-64-P-128-128-P-256x3-P-512x3-P-512x3-P), global average pool, shared FC
1024 + ReLU, ten branches FC 100 -> ReLU -> FC 100 -> ReLU -> 1, one sigmoid BCE per
task (mean over the batch), summed. One step = forward (training mode), the losses,
backward (no optimiser), and the losses read back to the host.

    python reference/bench_vgg.py [--threads 2] [--batch 64] [--warmup 2] [--steps 5]
        [--repeats 3] [--device cpu|cuda] [--channels-last]

Output (the same fields as the Rust bench's line):
    torch vgg16 fwd_bwd images_per_s=... min=... max=... repeats=3 batch=64 threads=2 device=cpu
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VGG16 = [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"]
TASKS = 10


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in VGG16:
            if v == "P":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.shared = nn.Linear(512, 1024)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(1024, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 1))
            for _ in range(TASKS)
        )

    def forward(self, x):
        f = F.relu(self.shared(self.features(x).mean(dim=(2, 3))))
        return torch.cat([b(f) for b in self.branches], dim=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    net = Net().to(dev).train()
    x = torch.rand(a.batch, 3, 32, 32, device=dev) - 0.5
    y = (torch.rand(a.batch, TASKS, device=dev) > 0.5).float()
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)

    def step(n):
        for _ in range(n):
            net.zero_grad(set_to_none=True)
            z = net(x)
            loss = F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(dim=0).sum()
            loss.backward()
            loss.item()

    step(a.warmup)
    rates = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        step(a.steps)
        rates.append(a.steps * a.batch / (time.perf_counter() - t))
    print(
        f"torch vgg16 fwd_bwd images_per_s={statistics.median(rates):.1f} min={min(rates):.1f} "
        f"max={max(rates):.1f} repeats={a.repeats} batch={a.batch} threads={torch.get_num_threads()} "
        f"device={a.device}{' channels_last' if a.channels_last else ''}"
    )


if __name__ == "__main__":
    main()
