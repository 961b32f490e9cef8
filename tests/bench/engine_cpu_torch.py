"""PyTorch side of tests/bench/engine_cpu: the same nets, batches, samples and optimizer as the
engine's run, on the CPU at PyTorch's best set-up on this machine kind: torch.set_num_threads(T)
with OpenBLAS held to one thread (engine_cpu starts this script with OPENBLAS_NUM_THREADS=1;
PyTorch's convolutions run in oneDNN, and its default threading oversubscribes small machines).

usage: engine_cpu_torch.py THREADS SAMPLES DATA_DIR NETS BATCHES [EVAL]
  NETS: comma-separated names (cnn, plain3, dwsep; the same layer lists as engine_cpu.c), or
  "serve": read requests from stdin, one a line ("NET BATCH", "acc NET [SEED]"), as engine_cpu does,
  BATCHES: comma-separated batch sizes, DATA_DIR: Fashion-MNIST IDX files, or "-" for the
  random data engine_cpu uses when the set is missing (seeded differently: speed only),
  EVAL: 1 to train one full epoch (60000 samples) at batch 64 per net and report test accuracy.
Prints one line per case: "torch NET BATCH SAMPLES_PER_S SAMPLES_PER_CPU_S" and, with EVAL, "acc NET ACCURACY"."""
import gzip, os, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

threads, samples, ddir, nets, batches = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
do_eval = len(sys.argv) > 6 and sys.argv[6] == "1"
torch.set_num_threads(threads)


def idx(path):
    if not os.path.exists(path): path = path[:-3]
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f: d = f.read()
    n = int.from_bytes(d[4:8], "big")
    return np.frombuffer(d, np.uint8, offset=16 if d[3] == 3 else 8).reshape(n, -1)


def load(split):
    x = torch.tensor(idx(f"{ddir}/{split}-images-idx3-ubyte.gz"), dtype=torch.float32).div_(255).view(-1, 1, 28, 28)
    y = torch.tensor(idx(f"{ddir}/{split}-labels-idx1-ubyte.gz"), dtype=torch.long).view(-1)
    return x, y


if ddir != "-":
    xtr, ytr = load("train")
else:
    g = torch.Generator().manual_seed(5)
    xtr = torch.randint(0, 256, (samples, 1, 28, 28), generator=g).float().div_(255)
    ytr = torch.randint(0, 10, (samples,), generator=g)


def conv(i, o, k, groups=1):
    return nn.Conv2d(i, o, k, padding=k // 2, groups=groups)


def make(name):
    m = layers(name)
    # The engine's initialisation (engine_net_init: He uniform, bound sqrt(6 / fan_in), zero
    # bias), so that one epoch's accuracy compares the training, not the initialisations: with
    # PyTorch's default (bound sqrt(1 / fan_in)) the depthwise-separable net, seven ReLU layers
    # without batch norm, stayed at chance (0.1000) after its epoch.
    for mod in m.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(mod.weight, nonlinearity="relu")
            nn.init.zeros_(mod.bias)
    return m


def layers(name):
    # Keep in step with the layer lists in engine_cpu.c.
    if name == "cnn":  # FedAvg CNN, McMahan et al. 2017
        return nn.Sequential(conv(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), conv(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, 10))
    if name == "plain3":
        return nn.Sequential(conv(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), conv(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                             conv(32, 64, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    if name == "dwsep":
        return nn.Sequential(conv(1, 32, 3), nn.ReLU(),
                             conv(32, 32, 3, 32), nn.ReLU(), conv(32, 64, 1), nn.ReLU(), nn.MaxPool2d(2),
                             conv(64, 64, 3, 64), nn.ReLU(), conv(64, 128, 1), nn.ReLU(), nn.MaxPool2d(2),
                             conv(128, 128, 3, 128), nn.ReLU(), conv(128, 128, 1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    raise SystemExit(f"engine_cpu_torch: unknown net {name}")


def epoch(m, opt, x, y, B):
    for i in range(0, x.shape[0], B):
        loss = F.cross_entropy(m(x[i:i + B]), y[i:i + B])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


cases = {}  # (net, batch) -> (model, optimizer), warmed up


def timed(name, B):
    if (name, B) not in cases:
        torch.manual_seed(1)
        m = make(name)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        w = min(3 * B, samples)  # warm-up, as engine_cpu does
        epoch(m, opt, xtr[:w], ytr[:w], B)
        cases[(name, B)] = (m, opt)
    m, opt = cases[(name, B)]
    t0, c0 = time.perf_counter(), time.process_time()
    epoch(m, opt, xtr[:samples], ytr[:samples], B)
    t1, c1 = time.perf_counter(), time.process_time()
    print(f"torch {name} {B} {samples / (t1 - t0):.1f} {samples / (c1 - c0):.1f}", flush=True)


def accuracy(name, seed=1):
    xte, yte = load("t10k")
    torch.manual_seed(seed)
    m = make(name)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    perm = torch.randperm(xtr.shape[0], generator=torch.Generator().manual_seed(seed))
    epoch(m, opt, xtr[perm], ytr[perm], 64)
    m.eval()
    with torch.no_grad():
        acc = sum((m(xte[i:i + 2000]).argmax(1) == yte[i:i + 2000]).sum().item() for i in range(0, 10000, 2000))
    print(f"acc {name} {acc / 10000:.4f}", flush=True)


if nets == "serve":
    # engine_cpu's co-process: one request a line, "NET BATCH" (one timed epoch) or "acc NET [SEED]",
    # so the two frameworks' runs alternate case by case under the same machine load.
    print("ready", flush=True)
    for line in sys.stdin:
        f = line.split()
        if len(f) in (2, 3) and f[0] == "acc":
            accuracy(f[1], int(f[2]) if len(f) == 3 else 1)
        elif len(f) == 2:
            timed(f[0], int(f[1]))
else:
    for name in nets.split(","):
        for B in map(int, batches.split(",")):
            timed(name, B)
        if do_eval and ddir != "-":
            accuracy(name)
