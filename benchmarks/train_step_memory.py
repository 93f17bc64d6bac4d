"""Measured peak memory of one training step on the CPU against the cost table's training estimate.

    python benchmarks/train_step_memory.py ARCH BATCH SIZE sgd|momentum|adam

Prints the estimate, the measured peak resident memory above the process's memory before the model was
built (over two steps: the second is the steady state, with the optimizer's state and the gradients alive
during backward), and their ratio. Run each case in a fresh process (the peak is per process) and with
``MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=65536``, so that freed memory goes back to the system at
once and the peak is what was alive, not the allocator's slack (the test sets both).
"""
import resource, sys, torch, torchvision, gc
torch.set_num_threads(1)
arch, batch, size, opt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def rss():
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * 4096
from explorer.core.costs import cost_table
m = torchvision.models.get_model(arch, weights=None)
t = cost_table(m.eval(), (3, size, size), batch=batch)
est = t.training_bytes(opt)
del m; gc.collect()
base = rss()
m = torchvision.models.get_model(arch, weights=None).train()
o = torch.optim.Adam(m.parameters()) if opt == "adam" else torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(batch, 3, size, size); y = torch.randint(0, 1000, (batch,))
for _ in range(2):  # the second step is the steady state: the optimizer's state exists during backward
    o.zero_grad()  # set_to_none, PyTorch's default
    loss = torch.nn.functional.cross_entropy(m(x), y); loss.backward(); o.step()
def high_water_mark() -> int:
    """Peak resident memory of this address space (VmHWM). Not ru_maxrss: Linux keeps that across execve,
    so a child started from a big process (pytest) would report its parent's size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


peak = high_water_mark()
print(arch, batch, size, opt, "estimate", est >> 20, "MiB measured", (peak - base) >> 20, "MiB ratio", round(est / (peak - base), 3))
