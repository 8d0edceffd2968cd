"""First-call cost of new matmul shapes on a GPU (why lorank pads widths to a multiple of 16 there).

    python benchmarks/gpu_shapes.py
"""
import time

import torch

w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
for m in (9600, 9600, 9616, 9616, 9632, 12544, 12544, 8000, 8000):
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    y = x @ w.T
    torch.cuda.synchronize()
    print(f"M={m:6d} first matmul {1e3 * (time.perf_counter() - t0):8.2f} ms", flush=True)
