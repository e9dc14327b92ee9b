#!/usr/bin/env python3
"""Peer baseline, gpt-fast style: a plain PyTorch Llama-2-7B (random fp16 weights) whose single-token
decode step, with a static KV cache, is captured once in a CUDA graph and replayed. Position and token
live in static device tensors. Prints one JSON line with tokens/s per context depth (median of reps).

usage: python3 bench/peers/torch_graph_decode.py [--tg 128] [--depths 0,512,4096] [--reps 3]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

H, I, L, NH, HD, V = 4096, 11008, 32, 32, 128, 32000


class Model:
    def __init__(self, max_ctx, dtype=torch.float16):
        g = torch.Generator(device="cuda").manual_seed(0)

        def w(rows, cols):
            a = (3.0 / cols) ** 0.5
            return (torch.rand(rows, cols, device="cuda", generator=g, dtype=torch.float32) * 2 - 1).mul_(a).to(dtype)

        self.embed = w(V, H)
        self.layers = [dict(qkv=w(3 * NH * HD, H), o=w(H, NH * HD), gu=w(2 * I, H), down=w(H, I),
                            n1=torch.ones(H, device="cuda", dtype=dtype), n2=torch.ones(H, device="cuda", dtype=dtype))
                       for _ in range(L)]
        self.norm = torch.ones(H, device="cuda", dtype=dtype)
        self.head = w(V, H)
        self.max_ctx = max_ctx
        self.k = torch.zeros(L, 1, NH, max_ctx, HD, device="cuda", dtype=dtype)
        self.v = torch.zeros_like(self.k)
        inv = 1.0 / (10000.0 ** (torch.arange(0, HD, 2, device="cuda").float() / HD))
        t = torch.arange(max_ctx, device="cuda").float()
        f = torch.outer(t, inv)
        self.cos, self.sin = f.cos(), f.sin()
        self.ar = torch.arange(max_ctx, device="cuda")

    @staticmethod
    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * w

    def rope(self, x, pos):  # x [1, NH, 1, HD]
        c, s = self.cos[pos].view(1, 1, 1, -1), self.sin[pos].view(1, 1, 1, -1)
        x1, x2 = x[..., : HD // 2].float(), x[..., HD // 2:].float()
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1).to(x.dtype)

    def step(self, tok, pos):  # tok, pos: int64 [1] device tensors
        x = self.embed[tok].view(1, H)
        mask = (self.ar <= pos).view(1, 1, 1, -1)
        for i, lw in enumerate(self.layers):
            h = self.rms(x, lw["n1"])
            q, k, v = (h @ lw["qkv"].t()).view(1, 3, NH, 1, HD).unbind(1)
            q, k = self.rope(q, pos), self.rope(k, pos)
            self.k[i].index_copy_(2, pos, k)
            self.v[i].index_copy_(2, pos, v)
            a = F.scaled_dot_product_attention(q, self.k[i], self.v[i], attn_mask=mask)
            x = x + a.reshape(1, NH * HD) @ lw["o"].t()
            h = self.rms(x, lw["n2"])
            g, u = (h @ lw["gu"].t()).split(I, -1)
            x = x + (F.silu(g) * u) @ lw["down"].t()
        return torch.argmax(self.rms(x, self.norm) @ self.head.t(), -1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--depths", default="0,512,4096")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    res = {"peer": "torch_graph_decode", "torch": torch.__version__, "device": torch.cuda.get_device_name(),
           "dtype": "float16", "tg": a.tg, "reps": a.reps, "results": []}
    weight_bytes = 2 * (L * (3 * NH * HD * H + H * NH * HD + 3 * H * I + 2 * H) + V * H + H)
    for d in [int(x) for x in a.depths.split(",")]:
        m = Model(max_ctx=d + a.tg + 1)  # static cache sized to the run, as gpt-fast does
        tok = torch.ones(1, dtype=torch.long, device="cuda")
        pos = torch.zeros(1, dtype=torch.long, device="cuda")
        with torch.inference_mode():
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    m.step(tok, pos)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = m.step(tok, pos)
            runs = []
            for _ in range(a.reps):
                pos.fill_(d)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for i in range(a.tg):
                    graph.replay()
                    tok.copy_(out)
                    pos.add_(1)
                    int(out.item())  # read the token each step, as a serving loop would
                runs.append(time.perf_counter() - t0)
        t = statistics.median(runs)
        kv = sum(2 * L * NH * HD * 2 * (d + i + 1) for i in range(a.tg))  # bytes of K and V attended
        kv_read = 2 * L * NH * HD * 2 * m.max_ctx * a.tg  # SDPA with a mask reads the whole static cache
        res["results"].append({"depth": d, "tok_per_s": a.tg / t, "ms_per_token": 1e3 * t / a.tg,
                               "effective_gbs": (weight_bytes * a.tg + kv) / t / 1e9,
                               "bytes_read_gbs": (weight_bytes * a.tg + kv_read) / t / 1e9,
                               "all_s": runs})
        del m, graph
        torch.cuda.empty_cache()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
