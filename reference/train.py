#!/usr/bin/env python3
"""PyTorch reference for sskernel's MNIST / Fashion-MNIST STL and MTL nets.

Mirrors `sskernel train mnist ...` (docs: reference/README.md, DESIGN.md §3, §4, §8):

    python reference/train.py mnist [--mode stl|mtl] [--epochs 30] [--batch 64]
        [--lr 0.02] [--momentum 0.5] [--seed N] [--data-dir DIR] [--threads N]
        [--max-steps N] [--out DIR] [--variant eager|batched]
    python reference/train.py fashion-mnist [--data-dir DIR] ...

Only torch and numpy are needed.
"""
import argparse
import gzip
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_DIR = os.path.join(REPO_ROOT, "data", "mnist")
FASHION_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
N_TASKS = 10
EXPECTED_PARAMS = {"stl": 500_580, "mtl": 1_122_930}


# --------------------------------------------------------------------------- data

def read_idx(path, kind):
    """Reads an IDX file (raw or .gz). kind: 'images' (idx3, 28x28) or 'labels' (idx1).
    Returns a uint8 numpy array [N, 28, 28] or [N]. Fails with a message naming the file."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise SystemExit(f"{path}: cannot read: {e}")
    if len(buf) < 8:
        raise SystemExit(f"{path}: too short for an IDX header ({len(buf)} bytes)")
    magic = int.from_bytes(buf[0:4], "big")
    want_magic, ndim = (2051, 3) if kind == "images" else (2049, 1)
    if magic != want_magic:
        raise SystemExit(f"{path}: bad magic number {magic:#010x}, expected {want_magic:#010x} ({kind})")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise SystemExit(f"{path}: truncated header")
    dims = [int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if kind == "images" and dims[1:] != [28, 28]:
        raise SystemExit(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    size = header + int(np.prod(dims))
    if len(buf) != size:
        raise SystemExit(f"{path}: {len(buf)} bytes, expected {size} for dimensions {dims}")
    arr = np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)
    if kind == "labels" and arr.size and arr.max() > 9:
        raise SystemExit(f"{path}: label {arr.max()} out of range 0..9")
    return arr


def find_idx(directory, stems):
    """First existing file among directory/stem[.gz] for the given stems."""
    tried = []
    for stem in stems:
        for name in (stem, stem + ".gz"):
            p = os.path.join(directory, name)
            tried.append(name)
            if os.path.isfile(p):
                return p
    raise SystemExit(f"{directory}: none of {', '.join(tried)} found")


def load_pair(directory, prefix):
    imgs = find_idx(directory, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    labs = find_idx(directory, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    x, y = read_idx(imgs, "images"), read_idx(labs, "labels")
    if len(x) != len(y):
        raise SystemExit(f"{imgs}: {len(x)} images but {labs} has {len(y)} labels")
    return x, y


def load_data(dataset, data_dir, embedded_dir):
    """Returns dict split -> (x uint8 [N,28,28], y uint8 [N]) and a description."""
    if dataset == "mnist" and data_dir is None:
        imgs = os.path.join(embedded_dir, "images-idx3-ubyte.gz")
        labs = os.path.join(embedded_dir, "labels-idx1-ubyte.gz")
        x, y = read_idx(imgs, "images"), read_idx(labs, "labels")
        if len(x) != len(y):
            raise SystemExit(f"{imgs}: {len(x)} images but {labs} has {len(y)} labels")
        i = np.arange(len(x))
        split = {
            "train": (x[(i % 10 != 8) & (i % 10 != 9)], y[(i % 10 != 8) & (i % 10 != 9)]),
            "val": (x[i % 10 == 8], y[i % 10 == 8]),
            "test": (x[i % 10 == 9], y[i % 10 == 9]),
        }
        desc = f"mnist embedded {embedded_dir}"
    else:
        if data_dir is None:  # fashion-mnist default
            data_dir = FASHION_DEFAULT_DIR
            if not os.path.isdir(data_dir):
                raise SystemExit(f"{data_dir} does not exist: install the Debian package "
                                 "dataset-fashion-mnist or pass --data-dir DIR")
        xtr, ytr = load_pair(data_dir, "train")
        xte, yte = load_pair(data_dir, "t10k")
        if len(xtr) <= 10_000:
            raise SystemExit(f"{data_dir}: only {len(xtr)} training images, need more than 10000")
        split = {
            "train": (xtr[:-10_000], ytr[:-10_000]),
            "val": (xtr[-10_000:], ytr[-10_000:]),
            "test": (xte, yte),
        }
        desc = f"{dataset} {data_dir}"
    return split, desc


def to_tensors(x, y, device):
    xt = torch.from_numpy(x.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    yt = torch.from_numpy(y.astype(np.int64))
    return xt.to(device), yt.to(device)


# --------------------------------------------------------------------------- models

class Trunk(nn.Module):
    """conv5x5 1->20, BN, ReLU, pool2, conv5x5 20->40, BN, ReLU, pool2, FC 640->640, ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.bn1 = nn.BatchNorm2d(20)
        self.conv2 = nn.Conv2d(20, 40, 5)
        self.bn2 = nn.BatchNorm2d(40)
        self.fc = nn.Linear(640, 640)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return F.relu(self.fc(torch.flatten(x, 1)))


def branch(out):
    return nn.Sequential(nn.Linear(640, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(),
                         nn.Linear(50, out))


class STLNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = Trunk()
        self.head = branch(10)

    def forward(self, x):
        return self.head(self.trunk(x))

    def loss(self, logits, y):
        return F.cross_entropy(logits, y)


class MTLEager(nn.Module):
    """Ten nn.Sequential branches, run one after the other."""

    def __init__(self):
        super().__init__()
        self.trunk = Trunk()
        self.branches = nn.ModuleList([branch(1) for _ in range(N_TASKS)])

    def forward(self, x):
        h = self.trunk(x)
        return torch.cat([b(h) for b in self.branches], dim=1)  # [B, 10]

    def loss(self, logits, y):
        target = F.one_hot(y, N_TASKS).to(logits.dtype)
        return sum(F.binary_cross_entropy_with_logits(logits[:, t], target[:, t])
                   for t in range(N_TASKS))


class MTLBatched(nn.Module):
    """The same ten branches as batched weights [10,out,in]; one baddbmm per layer runs
    all branches. Initialised by drawing the ten per-branch nn.Linear layers in the same
    order as MTLEager (PyTorch default U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and stacking
    them, so with the same seed both variants start from identical weights."""

    def __init__(self):
        super().__init__()
        self.trunk = Trunk()
        eager = [branch(1) for _ in range(N_TASKS)]
        for i, name in ((0, "1"), (2, "2"), (4, "3")):
            self.register_parameter("w" + name, nn.Parameter(
                torch.stack([b[i].weight.detach() for b in eager]).clone()))  # [10,out,in]
            self.register_parameter("b" + name, nn.Parameter(
                torch.stack([b[i].bias.detach() for b in eager]).clone()))  # [10,out]

    def forward(self, x):
        h = self.trunk(x)  # [B, 640]
        h = h.unsqueeze(0).expand(N_TASKS, -1, -1)  # [10, B, 640] (stride 0, no copy)
        h = F.relu(torch.baddbmm(self.b1.unsqueeze(1), h, self.w1.transpose(1, 2)))  # [10,B,100]
        h = F.relu(torch.baddbmm(self.b2.unsqueeze(1), h, self.w2.transpose(1, 2)))  # [10,B,50]
        z = torch.baddbmm(self.b3.unsqueeze(1), h, self.w3.transpose(1, 2))  # [10,B,1]
        return z.squeeze(2).t()  # [B, 10]

    def loss(self, logits, y):
        target = F.one_hot(y, N_TASKS).to(logits.dtype)
        # sum over tasks of the batch-mean BCE
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(0).sum()


def build_model(mode, variant):
    if mode == "stl":
        if variant != "eager":
            raise SystemExit("--variant batched applies to --mode mtl only")
        return STLNet()
    return MTLBatched() if variant == "batched" else MTLEager()


def count_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- train / eval

def set_threads(threads):
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (e.g. called twice in one process)
        pass


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model, mode, x, y, batch=1000):
    model.eval()
    correct, task_correct = 0, 0
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch])
        yb = y[i:i + batch]
        correct += (logits.argmax(1) == yb).sum().item()
        if mode == "mtl":
            target = F.one_hot(yb, N_TASKS).bool()
            task_correct += ((logits > 0) == target).sum().item()
    acc = correct / len(x)
    task_acc = task_correct / (len(x) * N_TASKS) if mode == "mtl" else None
    return acc, task_acc


def device_name(device, threads):
    if device.type == "cuda":
        return f"torch-cuda ({torch.cuda.get_device_name(device)})"
    return f"torch-cpu ({threads} threads)"


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch reference for sskernel (MNIST-family nets)")
    ap.add_argument("dataset", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--mode", choices=["stl", "mtl"], default="stl")
    ap.add_argument("--variant", choices=["eager", "batched"], default="eager",
                    help="MTL only: eager = ten nn.Sequential branches; batched = [10,out,in] "
                         "weights, one baddbmm per layer")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--momentum", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None,
                    help="mnist: standard 70k IDX files; fashion-mnist: default "
                         f"{FASHION_DEFAULT_DIR}")
    ap.add_argument("--embedded-dir", default=EMBEDDED_DIR,
                    help="where the embedded 10k MNIST IDX files are (default: data/mnist)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--out", default=None, help="default runs/ref-DATASET-MODE[-batched]-seedN")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args(argv)

    set_threads(args.threads)
    device = torch.device(args.device)
    if args.mode == "stl" and args.variant == "batched":
        ap.error("--variant batched applies to --mode mtl only")
    out = args.out or os.path.join(
        "runs", f"ref-{args.dataset}-{args.mode}{'-batched' if args.variant == 'batched' else ''}"
                f"-seed{args.seed}")
    os.makedirs(out, exist_ok=True)

    split, desc = load_data(args.dataset, args.data_dir, args.embedded_dir)
    xtr, ytr = to_tensors(*split["train"], device)
    xva, yva = to_tensors(*split["val"], device)
    xte, yte = to_tensors(*split["test"], device)

    torch.manual_seed(args.seed)
    model = build_model(args.mode, args.variant).to(device)
    params = count_params(model)
    assert params == EXPECTED_PARAMS[args.mode], (params, EXPECTED_PARAMS[args.mode])
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    gen = torch.Generator().manual_seed(args.seed)
    dev = device_name(device, args.threads)

    config = dict(vars(args), out=out, data=desc, params=params, device_name=dev,
                  torch=torch.__version__, numpy=np.__version__, python=platform.python_version(),
                  machine=platform.machine(), n_train=len(xtr), n_val=len(xva), n_test=len(xte))
    print(f"# {desc}: train {len(xtr)} val {len(xva)} test {len(xte)}; {args.mode} "
          f"{args.variant}; params {params:,}; {dev}; torch {torch.__version__}", flush=True)

    n = len(xtr)
    steps = 0
    log = []
    with open(os.path.join(out, "log.jsonl"), "w") as logf:
        for epoch in range(1, args.epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            nb, seen = 0, 0
            sync(device)
            t0 = time.perf_counter()
            for i in range(0, n, args.batch):
                idx = perm[i:i + args.batch]
                xb, yb = xtr[idx], ytr[idx]
                opt.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = model.loss(logits, yb)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
                nb += 1
                seen += len(idx)
                steps += 1
                if args.max_steps is not None and steps >= args.max_steps:
                    break
            sync(device)
            seconds = time.perf_counter() - t0
            train_loss = loss_sum.item() / nb
            val_acc, val_task = evaluate(model, args.mode, xva, yva)
            test_acc, test_task = evaluate(model, args.mode, xte, yte)
            rec = dict(epoch=epoch, train_loss=train_loss, val_acc=val_acc, test_acc=test_acc)
            if args.mode == "mtl":
                rec.update(val_task_acc=val_task, test_task_acc=test_task)
            rec.update(params=params, steps=steps, seconds=seconds, images_per_s=seen / seconds,
                       device=dev)
            log.append(rec)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            line = (f"epoch {epoch:3d}/{args.epochs} loss {train_loss:.4f} val_acc {val_acc:.4f} "
                    f"test_acc {test_acc:.4f}")
            if args.mode == "mtl":
                line += f" val_task {val_task:.4f} test_task {test_task:.4f}"
            line += f" {seconds:.1f}s {seen / seconds:.0f} img/s"
            print(line, flush=True)
            if not math.isfinite(train_loss):
                print("training loss is not finite; stopping", file=sys.stderr)
                break
            if args.max_steps is not None and steps >= args.max_steps:
                break

    best = max(log, key=lambda r: (r["val_acc"], -r["epoch"]))  # first epoch on ties
    summary = dict(best_epoch=best["epoch"], best_val_acc=best["val_acc"],
                   test_acc=best["test_acc"], params=params,
                   mean_images_per_s=float(np.mean([r["images_per_s"] for r in log])),
                   epochs_run=len(log), steps=steps, device=dev, config=config)
    if args.mode == "mtl":
        summary.update(val_task_acc=best["val_task_acc"], test_task_acc=best["test_task_acc"])
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(f"best epoch {best['epoch']}: val_acc {best['val_acc']:.4f} test_acc "
          f"{best['test_acc']:.4f}; params {params:,}; mean {summary['mean_images_per_s']:.0f} img/s"
          f"; wrote {out}/log.jsonl, {out}/summary.json", flush=True)
    return summary


if __name__ == "__main__":
    main()
