#!/usr/bin/env python3
"""Peer baseline, gpt-fast style: a plain PyTorch Llama-2-7B (random fp16 weights) whose decode step, with a
static KV cache, is captured once in a CUDA graph and replayed. Position and tokens live in static device
tensors. Prints one JSON line with tokens/s per context depth (median of reps).

--batch B decodes B sequences at once, all at the same depth (one [B, H] activation through every layer,
a [L, B, NH, ctx, HD] static cache sized to depth + tg only, one graph replay per step that makes one token
for each of the B sequences). It then reports output tokens/s = B x steps/s and the step time in ms, and
the JSON gains a "batch" field. With the default --batch 1 the run and its output are as before.

--quant int4: gpt-fast's int4 weight-only path instead of fp16 (every linear layer, the output head included,
as tinygemm int4 with group size 128: torch.ops.aten._weight_int4pack_mm on bf16 activations; random 4-bit
values, scales and zeros), the PyTorch peer for llamarun's int4 (AWQ / GPTQ) and Q4_K weights.

usage: python3 bench/peers/torch_graph_decode.py [--tg 128] [--depths 0,512,4096] [--reps 3] [--batch 1]
       python3 bench/peers/torch_graph_decode.py --quant int4 --depths 0
       python3 bench/peers/torch_graph_decode.py --batch 256 --depths 128,256 --tg 128   # ~66 GB on the GPU
       python3 bench/peers/torch_graph_decode.py --device cpu --tiny --batch 4 --depths 0,8 --tg 4  # smoke test
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

H, I, L, NH, HD, V = 4096, 11008, 32, 32, 128, 32000
TINY = dict(H=64, I=160, L=2, NH=4, HD=16, V=256)  # --tiny: a toy shape to smoke-test the code on a CPU


GROUP = 128  # int4 group size (gpt-fast's default)


class Int4Linear:
    """gpt-fast's WeightOnlyInt4Linear with random contents: 4-bit values packed for tinygemm
    (_convert_weight_to_int4pack, inner k tiles 8), bf16 scales and zeros per group of GROUP inputs;
    y = x @ W.T with W[n, k] = (q[n, k] - 8) * scale[k // GROUP, n] + zero[k // GROUP, n]."""

    def __init__(self, rows, cols, device, g):
        q = torch.randint(0, 16, (rows, cols), device=device, generator=g, dtype=torch.int32)
        try:  # torch >= 2.5: uint8 [rows, cols / 2], two values a byte (even index in the high nibble)
            self.packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
        except RuntimeError:  # older: int32 [rows, cols]
            self.packed = torch.ops.aten._convert_weight_to_int4pack(q, 8)
        a = (3.0 / cols) ** 0.5 / 8
        sz = torch.empty(cols // GROUP, rows, 2, device=device, dtype=torch.bfloat16)
        sz[..., 0].uniform_(0.5 * a, 1.5 * a, generator=g)
        sz[..., 1].uniform_(-a, a, generator=g)
        self.scales_and_zeros = sz
        self.rows, self.cols = rows, cols

    def apply(self, x):  # x @ W.T  (x: bf16 [B, cols])
        return torch.ops.aten._weight_int4pack_mm(x.contiguous(), self.packed, GROUP, self.scales_and_zeros)


class Model:
    def __init__(self, max_ctx, batch=1, dtype=torch.float16, device="cuda", quant=None):
        g = torch.Generator(device=device).manual_seed(0)

        def w(rows, cols):
            a = (3.0 / cols) ** 0.5
            return (torch.rand(rows, cols, device=device, generator=g, dtype=torch.float32) * 2 - 1).mul_(a).to(dtype)

        def lin(rows, cols):  # a linear layer's weight: fp16 [rows, cols], or an int4 pack (quant)
            if not quant:
                return w(rows, cols)
            return Int4Linear(rows, cols, device, g)

        self.embed = w(V, H)
        self.layers = [dict(qkv=lin(3 * NH * HD, H), o=lin(H, NH * HD), gu=lin(2 * I, H), down=lin(H, I),
                            n1=torch.ones(H, device=device, dtype=dtype), n2=torch.ones(H, device=device, dtype=dtype))
                       for _ in range(L)]
        self.norm = torch.ones(H, device=device, dtype=dtype)
        self.head = lin(V, H)
        self.max_ctx = max_ctx
        self.batch = batch
        self.k = torch.zeros(L, batch, NH, max_ctx, HD, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        inv = 1.0 / (10000.0 ** (torch.arange(0, HD, 2, device=device).float() / HD))
        t = torch.arange(max_ctx, device=device).float()
        f = torch.outer(t, inv)
        self.cos, self.sin = f.cos(), f.sin()
        self.ar = torch.arange(max_ctx, device=device)

    @staticmethod
    def mm(x, w):  # x @ W.T for an fp16 weight or an Int4Linear
        return w.apply(x) if isinstance(w, Int4Linear) else x @ w.t()

    @staticmethod
    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * w

    def rope(self, x, pos):  # x [B, NH, 1, HD]; every sequence is at the same position
        c, s = self.cos[pos].view(1, 1, 1, -1), self.sin[pos].view(1, 1, 1, -1)
        x1, x2 = x[..., : HD // 2].float(), x[..., HD // 2:].float()
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1).to(x.dtype)

    def step(self, tok, pos):  # tok: int64 [B], pos: int64 [1] device tensors; returns the next tokens [B]
        B = self.batch
        x = self.embed[tok].view(B, H)
        mask = (self.ar <= pos).view(1, 1, 1, -1)  # broadcast over the batch and heads
        for i, lw in enumerate(self.layers):
            h = self.rms(x, lw["n1"])
            q, k, v = self.mm(h, lw["qkv"]).view(B, 3, NH, 1, HD).unbind(1)  # each [B, NH, 1, HD]
            q, k = self.rope(q, pos), self.rope(k, pos)
            self.k[i].index_copy_(2, pos, k)  # cache layer i: [B, NH, ctx, HD]
            self.v[i].index_copy_(2, pos, v)
            a = F.scaled_dot_product_attention(q, self.k[i], self.v[i], attn_mask=mask)
            x = x + self.mm(a.reshape(B, NH * HD), lw["o"])
            h = self.rms(x, lw["n2"])
            g, u = self.mm(h, lw["gu"]).split(I, -1)
            x = x + self.mm(F.silu(g) * u, lw["down"])
        return torch.argmax(self.mm(self.rms(x, self.norm), self.head), -1)


def main():
    global H, I, L, NH, HD, V
    ap = argparse.ArgumentParser()
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--depths", default="0,512,4096")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1, help="sequences decoded together, all at the same depth")
    ap.add_argument("--device", default="cuda", help="cuda (graph-captured) or cpu (eager; for --tiny smoke tests)")
    ap.add_argument("--tiny", action="store_true", help="toy model shape instead of Llama-2-7B (smoke test)")
    ap.add_argument("--quant", choices=["int4"], help="int4 weight-only linear layers (gpt-fast / tinygemm), bf16")
    a = ap.parse_args()
    if a.batch < 1:
        ap.error("--batch must be >= 1")
    if a.tiny:
        H, I, L, NH, HD, V = (TINY[k] for k in ("H", "I", "L", "NH", "HD", "V"))
    cuda = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    B = a.batch
    res = {"peer": "torch_graph_decode", "torch": torch.__version__,
           "device": torch.cuda.get_device_name() if cuda else a.device,
           "dtype": "bfloat16 activations, int4 weights (group %d)" % GROUP if a.quant else "float16", "tg": a.tg, "reps": a.reps, "results": []}
    if B != 1:
        res["batch"] = B
    if a.tiny:
        res["tiny"] = True
    linear = L * (3 * NH * HD * H + H * NH * HD + 3 * H * I) + V * H  # values in linear layers
    weight_bytes = 2 * (L * 2 * H + H)  # norms (the embedding: one row a token)
    weight_bytes += linear * (0.5 + 4.0 / GROUP) if a.quant else 2 * linear
    for d in [int(x) for x in a.depths.split(",")]:
        m = Model(max_ctx=d + a.tg + 1, batch=B, device=a.device, quant=a.quant,
                  dtype=torch.bfloat16 if a.quant else torch.float16)  # static cache sized to the run, as gpt-fast does
        tok = (torch.arange(B, dtype=torch.long, device=a.device) % (V - 1)) + 1  # [1] for batch 1, as before
        pos = torch.zeros(1, dtype=torch.long, device=a.device)
        with torch.inference_mode():
            if cuda:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        m.step(tok, pos)
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = m.step(tok, pos)
                replay = graph.replay
            else:  # no graphs on the CPU: run the step eagerly into the same static output tensor
                graph = None
                out = m.step(tok, pos)

                def replay():
                    out.copy_(m.step(tok, pos))
            runs = []
            for _ in range(a.reps):
                pos.fill_(d)
                sync()
                t0 = time.perf_counter()
                for i in range(a.tg):
                    replay()
                    tok.copy_(out)
                    pos.add_(1)
                    if B == 1:
                        int(out.item())  # read the token each step, as a serving loop would
                    else:
                        out.tolist()  # read all B tokens each step, as a serving loop would
                runs.append(time.perf_counter() - t0)
        t = statistics.median(runs)
        # bytes of K and V attended (all B sequences), and what SDPA with a mask reads: the whole static cache
        kv = B * sum(2 * L * NH * HD * 2 * (d + i + 1) for i in range(a.tg))
        kv_read = B * 2 * L * NH * HD * 2 * m.max_ctx * a.tg
        row = {"depth": d}
        if B != 1:
            row.update({"batch": B, "tok_per_s": B * a.tg / t, "steps_per_s": a.tg / t, "step_ms": 1e3 * t / a.tg})
        else:
            row.update({"tok_per_s": a.tg / t, "ms_per_token": 1e3 * t / a.tg})
        row.update({"effective_gbs": (weight_bytes * a.tg + kv) / t / 1e9,
                    "bytes_read_gbs": (weight_bytes * a.tg + kv_read) / t / 1e9,
                    "all_s": runs})
        res["results"].append(row)
        del m, graph, out, replay
        if cuda:
            torch.cuda.empty_cache()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
