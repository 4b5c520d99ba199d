#!/usr/bin/env python3
"""SparK pre-training step in PyTorch (CPU, or CUDA with --device cuda), the reference side of bench/step-throughput.ts (`--torch`).

A compact re-implementation of the official method from ../shared/spec/spark.md §1-§4, written for timing:
  * mask: torch.rand → argsort → first len_keep cells visible (round-half-even, as Python's round), §1.3;
  * sparse conv / pool = dense op × mask at the output resolution, §2.1;
  * sparse BatchNorm as the reference does it: BHWC view → gather visible rows → BatchNorm1d → scatter into zeros, §2.2;
  * sparse LayerNorm (ConvNeXt): gather visible rows → LayerNorm → scatter into zeros, §2.3; ConvNeXt block of §2.4;
  * ResNet v1.5 Bottleneck (timm 0.5.4 layout), ConvNeXt (SparK's copy), drop path as timm 0.5.4;
  * densify (norm → where(mask, f, token) → projection), LightDecoder (dense BN), §3;
  * per-patch normalised masked-patch L2 loss with unbiased variance, §4;
  * LAMB as timm 0.5.4 (global clip 5 inside, bias correction, trust ratio only for the decay group), §6.5.
Modes (the same as the TS bench):
  sparse  = the SparK step with a random mask;
  visible = the same sparse graph with an all-ones mask (loss 0, full backward);
  dense   = the same network without any masking (plain Conv/BN/LN), densify without token fill, loss of a random mask.
--interleave builds every mode's model and alternates them step by step (same background load for all).
Memory formats: nchw (contiguous) and channels_last (model and input converted with .to(memory_format=...)).
--device cuda[:N]: model, input, masks and optimizer state on that GPU; every timed step is bracketed by
torch.cuda.synchronize(); TF32 stays as PyTorch's default (cuDNN convolutions TF32, matmuls full float32), and the
output records the flags, the GPU's name and the peak allocated memory.
Initialisation follows spec §2.4/§2.5/§3.3 (densify projections keep PyTorch's default), so the first loss is ≈ 1.

Usage: python3 bench/torch_spark.py --cases '[{"label":..,"family":"resnet","layers":[3,4,6,3],"width":64,
         "decoder_width":768,"densify_norm":"bn","drop_path":0.05,"mask_ratio":0.6,"size":224,"batch":8,"beta2":0.95}]'
         [--modes sparse,dense,visible] [--formats nchw,channels_last] [--warmup 2] [--iters 5] [--threads 2]
         [--device cpu|cuda|cuda:N]
Prints one JSON object on stdout; progress goes to stderr.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------------ mask context
class MaskCtx:
    """The current mask (B,1,f,f bool; None = dense), upsampled per resolution on demand (spec §1.4)."""

    def __init__(self):
        self.mask = None
        self._cache = {}

    def set(self, mask):
        self.mask = mask
        self._cache = {}

    def at(self, h):
        """(B,1,h,h) bool mask and its nonzero (b, y, x) index triple at resolution h."""
        if h not in self._cache:
            f = self.mask.shape[-1]
            r = h // f
            m = self.mask.repeat_interleave(r, 2).repeat_interleave(r, 3)
            self._cache[h] = (m, m[:, 0].nonzero(as_tuple=True))
        return self._cache[h]


CTX = MaskCtx()


def apply_mask(y):
    if CTX.mask is None:
        return y
    return y * CTX.at(y.shape[-1])[0]


class SparseConv2d(nn.Conv2d):
    def forward(self, x):
        return apply_mask(super().forward(x))


class SparseMaxPool(nn.MaxPool2d):
    def forward(self, x):
        return apply_mask(super().forward(x))


class SparseBN2d(nn.BatchNorm1d):
    """BatchNorm over visible positions only; masked outputs are exactly 0 (reference `sp_bn_forward`)."""

    def forward(self, x):
        if CTX.mask is None:  # dense mode: ordinary BatchNorm2d
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps)
        _, ii = CTX.at(x.shape[-1])
        bhwc = x.permute(0, 2, 3, 1)
        nc = bhwc[ii]
        nc = super().forward(nc)
        out = torch.zeros_like(bhwc)
        out[ii] = nc
        return out.permute(0, 3, 1, 2)


class SparseLN(nn.LayerNorm):
    """SparseConvNeXtLayerNorm: channels_last (B,H,W,C) or channels_first (B,C,H,W), gather → LN → scatter."""

    def __init__(self, c, eps=1e-6, channels_last=False):
        super().__init__(c, eps=eps)
        self.channels_last = channels_last

    def forward(self, x):
        if CTX.mask is None:
            if self.channels_last:
                return super().forward(x)
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        bhwc = x if self.channels_last else x.permute(0, 2, 3, 1)
        _, ii = CTX.at(bhwc.shape[1])
        nc = super().forward(bhwc[ii])
        out = torch.zeros_like(bhwc)
        out[ii] = nc
        return out if self.channels_last else out.permute(0, 3, 1, 2)


def drop_path(x, p, training):
    if p == 0.0 or not training:
        return x
    keep = 1 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x.div(keep) * mask


# ----------------------------------------------------------------------------------------------------- ResNet
class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride, downsample, dp):
        super().__init__()
        out = planes * 4
        self.conv1 = SparseConv2d(cin, planes, 1, bias=False)
        self.bn1 = SparseBN2d(planes)
        self.conv2 = SparseConv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = SparseBN2d(planes)
        self.conv3 = SparseConv2d(planes, out, 1, bias=False)
        self.bn3 = SparseBN2d(out)
        nn.init.zeros_(self.bn3.weight)
        self.downsample = nn.Sequential(SparseConv2d(cin, out, 1, stride, bias=False), SparseBN2d(out)) if downsample else None
        self.dp = dp

    def forward(self, x):
        sc = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(drop_path(y, self.dp, self.training) + sc)


class ResNet(nn.Module):
    def __init__(self, layers, width=64, dp=0.0):
        super().__init__()
        self.conv1 = SparseConv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = SparseBN2d(width)
        self.maxpool = SparseMaxPool(3, 2, 1)
        total = sum(layers)
        rates = [dp * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        cin, k, stages = width, 0, []
        for s, n in enumerate(layers):
            planes = width * 2 ** s
            blocks = []
            for j in range(n):
                stride = 2 if (s > 0 and j == 0) else 1
                blocks.append(Bottleneck(cin, planes, stride, j == 0, rates[k]))
                cin = planes * 4
                k += 1
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(stages)
        self.channels = [width * 4 * 2 ** s for s in range(4)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


# --------------------------------------------------------------------------------------------------- ConvNeXt
class CNBlock(nn.Module):
    def __init__(self, dim, dp):
        super().__init__()
        self.dwconv = SparseConv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = SparseLN(dim, channels_last=True)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))
        self.dp = dp

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y)))) * self.gamma
        y = apply_mask(y.permute(0, 3, 1, 2))
        return x + drop_path(y, self.dp, self.training)


class ConvNeXt(nn.Module):
    def __init__(self, depths, dims, dp=0.0):
        super().__init__()
        self.down = nn.ModuleList([nn.Sequential(SparseConv2d(3, dims[0], 4, 4), SparseLN(dims[0]))])
        for i in range(1, 4):
            self.down.append(nn.Sequential(SparseLN(dims[i - 1]), SparseConv2d(dims[i - 1], dims[i], 2, 2)))
        rates = torch.linspace(0, dp, sum(depths)).tolist()
        k, self.stages = 0, nn.ModuleList()
        for i in range(4):
            self.stages.append(nn.Sequential(*[CNBlock(dims[i], rates[k + j]) for j in range(depths[i])]))
            k += depths[i]
        self.channels = list(dims)
        for m in self.modules():  # ConvNeXt _init_weights (spec §2.4)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        feats = []
        for d, s in zip(self.down, self.stages):
            x = s(d(x))
            feats.append(x)
        return feats


# ---------------------------------------------------------------------------------------------- SparK + decoder
class UNetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up_sample = nn.ConvTranspose2d(cin, cin, 4, 2, 1, bias=True)
        self.conv = nn.Sequential(nn.Conv2d(cin, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
                                  nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.conv(self.up_sample(x))


class LightDecoder(nn.Module):
    def __init__(self, width=768, up=32):
        super().__init__()
        n = round(math.log2(up))
        ch = [width // 2 ** i for i in range(n + 1)]
        self.dec = nn.ModuleList([UNetBlock(a, b) for a, b in zip(ch[:-1], ch[1:])])
        self.proj = nn.Conv2d(ch[-1], 3, 1, bias=True)
        self.channels = ch
        for m in self.modules():  # LightDecoder.initialize (spec §3.3)
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=.02)
                nn.init.zeros_(m.bias) if m.bias is not None else None
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(m.bias)

    def forward(self, to_dec):
        x = 0
        for i, blk in enumerate(self.dec):
            if i < len(to_dec) and to_dec[i] is not None:
                x = x + to_dec[i]
            x = blk(x)
        return self.proj(x)


def round_half_even(x):
    return int(round(x))  # Python's round is half-to-even


class SparK(nn.Module):
    def __init__(self, enc, size, mask_ratio, densify_norm, dec_width):
        super().__init__()
        self.enc = enc
        self.dec = LightDecoder(dec_width)
        self.fmap = size // 32
        self.len_keep = round_half_even(self.fmap * self.fmap * (1 - mask_ratio))
        e_widths = list(reversed(enc.channels))
        self.mask_tokens = nn.ParameterList()
        self.densify_norms = nn.ModuleList()
        self.densify_projs = nn.ModuleList()
        for i, e in enumerate(e_widths):
            tok = nn.Parameter(torch.zeros(1, e, 1, 1))
            nn.init.trunc_normal_(tok, mean=0, std=.02, a=-.02, b=.02)
            self.mask_tokens.append(tok)
            self.densify_norms.append(SparseBN2d(e) if densify_norm == 'bn' else SparseLN(e) if densify_norm == 'ln' else nn.Identity())
            d = self.dec.channels[i]
            if i == 0 and e == d:
                self.densify_projs.append(nn.Identity())
            else:
                k = 1 if i == 0 else 3
                self.densify_projs.append(nn.Conv2d(e, d, k, 1, k // 2, bias=True))

    def make_mask(self, b, device='cpu'):
        L = self.fmap * self.fmap
        idx = torch.rand(b, L, device=device).argsort(dim=1)[:, :self.len_keep]
        return torch.zeros(b, L, dtype=torch.bool, device=device).scatter_(1, idx, True).view(b, 1, self.fmap, self.fmap)

    def forward(self, inp, mask, dense=False):
        """mask (B,1,f,f) bool, True = visible. dense=True: no masking in the network; the loss still uses `mask`."""
        CTX.set(None if dense else mask)
        x = inp if dense else inp * mask.repeat_interleave(32, 2).repeat_interleave(32, 3)
        feats = self.enc(x)[::-1]
        to_dec = []
        cur = mask
        for i, f in enumerate(feats):
            f = self.densify_norms[i](f)
            if not dense:
                m = cur.repeat_interleave(f.shape[-1] // cur.shape[-1], 2).repeat_interleave(f.shape[-1] // cur.shape[-1], 3)
                f = torch.where(m, f, self.mask_tokens[i].expand_as(f))
            to_dec.append(self.densify_projs[i](f))
        CTX.set(None)
        rec = self.dec(to_dec)
        return spark_loss(inp, rec, mask)


def patchify(x, p=32):
    b, c, H, W = x.shape
    h, w = H // p, W // p
    x = x.reshape(b, c, h, p, w, p)
    x = torch.einsum('bchpwq->bhwpqc', x)
    return x.reshape(b, h * w, p * p * c)


def spark_loss(inp, rec, mask):
    t = patchify(inp)
    mean = t.mean(dim=-1, keepdim=True)
    var = t.var(dim=-1, keepdim=True)  # unbiased
    t = (t - mean) / (var + 1e-6) ** .5
    l2 = ((patchify(rec) - t) ** 2).mean(dim=2)
    non_active = (~mask).float().view(mask.shape[0], -1)
    return (l2 * non_active).sum() / (non_active.sum() + 1e-8)


# ------------------------------------------------------------------------------------------------------ LAMB
class Lamb(torch.optim.Optimizer):
    """timm 0.5.4 Lamb (spec §6.5): global grad-norm clip (5) inside, bias correction, trust ratio ||p||/||u||
    only for groups with weight decay (always_adapt False)."""

    def __init__(self, groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-6, max_grad_norm=5.0):
        super().__init__(groups, dict(lr=lr, betas=betas, eps=eps, weight_decay=0.0, max_grad_norm=max_grad_norm))

    @torch.no_grad()
    def step(self):
        grads = [p.grad for g in self.param_groups for p in g['params'] if p.grad is not None]
        gnorm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        clip = torch.clamp(gnorm / self.defaults['max_grad_norm'], min=1.0)
        for group in self.param_groups:
            b1, b2 = group['betas']
            group['step'] = group.get('step', 0) + 1
            bc1, bc2 = 1 - b1 ** group['step'], 1 - b2 ** group['step']
            wd = group['weight_decay']
            for p in group['params']:
                if p.grad is None:
                    continue
                g = p.grad.div(clip)
                st = self.state[p]
                if not st:
                    st['m'] = torch.zeros_like(p)
                    st['v'] = torch.zeros_like(p)
                m, v = st['m'], st['v']
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                u = (m / bc1) / ((v / bc2).sqrt_().add_(group['eps']))
                if wd != 0:
                    u.add_(p, alpha=wd)
                    wn, un = p.norm(), u.norm()
                    trust = torch.where((wn > 0) & (un > 0), wn / un, torch.ones_like(wn))
                    u.mul_(trust)
                p.add_(u, alpha=-group['lr'])
        return gnorm


def param_groups(model, wd):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        nd = p.ndim == 1 or name.endswith('.bias') or any(k in name for k in ('mask_token', 'gamma', 'cls_token', 'pos_embed'))
        (no_decay if nd else decay).append(p)
    return [dict(params=decay, weight_decay=wd), dict(params=no_decay, weight_decay=0.0)]


# ----------------------------------------------------------------------------------------------------- bench
DEVICE = torch.device('cpu')


def sync():
    """Wait for the GPU's queued work (timing brackets); nothing on the CPU."""
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize(DEVICE)


def synthetic_batch(b, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g).to(DEVICE)


def build(case):
    if case['family'] == 'resnet':
        enc = ResNet(case['layers'], case.get('width', 64), case['drop_path'])
    else:
        enc = ConvNeXt(case['depths'], case['dims'], case['drop_path'])
    return SparK(enc, case['size'], case['mask_ratio'], case['densify_norm'], case['decoder_width'])


def time_case(case, mode, fmt, warmup, iters):
    torch.manual_seed(0)
    load0 = os.getloadavg()[0]
    model = build(case).train().to(DEVICE)
    x = synthetic_batch(case['batch'], case['size'])
    if fmt == 'channels_last':
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = Lamb(param_groups(model, 0.04), lr=1e-4, betas=(0.9, case['beta2']))
    f = model.fmap
    ones = torch.ones(case['batch'], 1, f, f, dtype=torch.bool, device=DEVICE)
    times, loss = [], float('nan')
    for i in range(warmup + iters):
        sync()
        t0 = time.perf_counter()
        mask = ones if mode == 'visible' else model.make_mask(case['batch'], DEVICE)
        opt.zero_grad(set_to_none=True)
        l = model(x, mask, dense=(mode == 'dense'))
        l.backward()
        opt.step()
        loss = l.item()
        sync()
        dt = (time.perf_counter() - t0) * 1000
        print(f"[torch {case['label']}/{mode}/{fmt}] {'warmup' if i < warmup else 'step'} {i + 1}: {dt:.0f} ms, loss {loss:.4f}",
              file=sys.stderr, flush=True)
        if i >= warmup:
            times.append(dt)
    del model, opt
    return dict(label=case['label'], mode=mode, memory_format=fmt, batch=case['batch'], size=case['size'], times_ms=times,
                median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times), loss=loss,
                loadavg=[load0, os.getloadavg()[0]])


def time_interleaved(case, modes, fmt, warmup, iters):
    """All modes' models alive together, stepped in turn, so that every mode sees the same background load."""
    load0 = os.getloadavg()[0]
    runs = []
    for mode in modes:
        torch.manual_seed(0)
        model = build(case).train().to(DEVICE)
        if fmt == 'channels_last':
            model = model.to(memory_format=torch.channels_last)
        runs.append(dict(mode=mode, model=model, opt=Lamb(param_groups(model, 0.04), lr=1e-4, betas=(0.9, case['beta2'])),
                         times=[], loss=float('nan')))
    x = synthetic_batch(case['batch'], case['size'])
    if fmt == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    f = runs[0]['model'].fmap
    ones = torch.ones(case['batch'], 1, f, f, dtype=torch.bool, device=DEVICE)
    for i in range(warmup + iters):
        for r in runs:
            model, opt, mode = r['model'], r['opt'], r['mode']
            sync()
            t0 = time.perf_counter()
            mask = ones if mode == 'visible' else model.make_mask(case['batch'], DEVICE)
            opt.zero_grad(set_to_none=True)
            l = model(x, mask, dense=(mode == 'dense'))
            l.backward()
            opt.step()
            r['loss'] = l.item()
            sync()
            dt = (time.perf_counter() - t0) * 1000
            print(f"[torch {case['label']}/{mode}/{fmt}] {'warmup' if i < warmup else 'step'} {i + 1}: {dt:.0f} ms, "
                  f"loss {r['loss']:.4f}, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
            if i >= warmup:
                r['times'].append(dt)
    load1 = os.getloadavg()[0]
    return [dict(label=case['label'], mode=r['mode'], memory_format=fmt, batch=case['batch'], size=case['size'],
                 times_ms=r['times'], median_ms=statistics.median(r['times']), min_ms=min(r['times']), max_ms=max(r['times']),
                 loss=r['loss'], loadavg=[load0, load1]) for r in runs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--cases', required=True, help='JSON list of resolved cases (see module docstring)')
    ap.add_argument('--modes', default='sparse,dense,visible')
    ap.add_argument('--formats', default='nchw,channels_last')
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--interleave', action='store_true', help='alternate the modes step by step')
    ap.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (everything on that device)')
    a = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(a.device)
    if DEVICE.type == 'cuda':
        if not torch.cuda.is_available():
            print(f'torch_spark: --device {a.device}: torch {torch.__version__} sees no CUDA device', file=sys.stderr)
            sys.exit(2)
        if DEVICE.index is None:
            DEVICE = torch.device('cuda', torch.cuda.current_device())
        torch.cuda.set_device(DEVICE)
    elif DEVICE.type != 'cpu':
        print(f'torch_spark: --device must be cpu, cuda or cuda:N, got {a.device}', file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    out = dict(torch_version=torch.__version__, threads=a.threads, optimizer='LAMB (timm 0.5.4 semantics, own implementation)',
               device=str(DEVICE), loadavg_before=list(os.getloadavg()), results=[])
    if DEVICE.type == 'cuda':
        out.update(gpu=torch.cuda.get_device_name(DEVICE), cuda=torch.version.cuda,
                   tf32=dict(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32))
    for case in json.loads(a.cases):
        for fmt in a.formats.split(','):
            if a.interleave:
                try:
                    out['results'].extend(time_interleaved(case, a.modes.split(','), fmt, a.warmup, a.iters))
                except Exception as e:  # noqa: BLE001 - reported in the table
                    out['results'].append(dict(label=case['label'], mode='sparse', memory_format=fmt, batch=case['batch'],
                                               size=case['size'], times_ms=[], median_ms=0, min_ms=0, max_ms=0, loss=0,
                                               error=f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'))
                continue
            for mode in a.modes.split(','):
                try:
                    out['results'].append(time_case(case, mode, fmt, a.warmup, a.iters))
                except Exception as e:  # noqa: BLE001 - reported in the table
                    out['results'].append(dict(label=case['label'], mode=mode, memory_format=fmt, batch=case['batch'],
                                               size=case['size'], times_ms=[], median_ms=0, min_ms=0, max_ms=0, loss=0,
                                               error=f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'))
                    print(f"[torch {case['label']}/{mode}/{fmt}] FAILED {e}", file=sys.stderr, flush=True)
    out['loadavg_after'] = list(os.getloadavg())
    out['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # whole process, all cases
    if DEVICE.type == 'cuda':
        out['peak_gpu_mib'] = torch.cuda.max_memory_allocated(DEVICE) / 2 ** 20
    print(json.dumps(out))


if __name__ == '__main__':
    main()
