/**
 * Parity with PyTorch (optional oracle): when `python3` with torch is available, an independent PyTorch
 * re-statement of the reference SparK code (sparse conv/max-pool by mask multiplication, sparse BN as gather →
 * BatchNorm1d → scatter, sparse LN, timm Bottleneck, official ConvNeXt block, LightDecoder with ConvTranspose2d,
 * densify, loss; embedded below) loads this port's weights by reference key with `load_state_dict(strict=True)`
 * in PyTorch layout (weights.ts) and must reproduce, in train mode, the 4 encoder maps, the prediction, the loss,
 * the gradient of every parameter and the updated BN buffers, and in eval mode the loss and the reconstruction
 * composite. Skipped (with the reason) when torch is not importable. Pin: torch==2.13.0+cpu.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import type { ModelConfig } from '../src/spec/types.js';
import { buildSparK } from '../src/models/spark.js';
import { resolveEncoder } from '../src/models/registry.js';
import { toTorchLayout } from '../src/models/weights.js';
import { Rng } from '../src/util/rng.js';
import { PYTHON, pythonMissing } from './helpers/python.js';

await testBackend();


function torchAvailable(): string | null {
  // find_spec does not import torch (slow); the version is read from the package metadata
  const code = 'import importlib.util as u, importlib.metadata as m, sys\nok = u.find_spec("torch") and u.find_spec("numpy")\nprint(m.version("torch") if ok else "")';
  const r = spawnSync(PYTHON, ['-c', code], { encoding: 'utf8', timeout: 60_000 });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

/** Run the TS model and dump weights (PyTorch layout), inputs and results for the reference script. */
function dump(enc: string, dir: string): string {
  const S = 64;
  const cfg: ModelConfig = { encoder: enc, decoder: { type: 'light', width: 64 }, mask_ratio: 0.6, drop_path: 0, densify_norm: 'auto' };
  const m = buildSparK(cfg, S, 3);
  try {
    // make γ/β/biases non-trivial so every path is exercised (bn3 γ = 0 and zero biases would hide errors)
    const r = Rng.from(4, 'perturb');
    for (const [k, v] of m.params) {
      if (!/\.bias$|gamma$|\.weight$/.test(k) || v.rank !== 1) continue;
      const base = k.endsWith('gamma') ? 0.3 : k.endsWith('weight') ? 1 : 0;
      const d = Float32Array.from({ length: v.size }, () => base + 0.2 * r.normal());
      tf.tidy(() => v.assign(tf.tensor(d, v.shape)));
    }
    const entries: Array<{ name: string; shape: number[]; offset: number; length: number }> = [];
    const chunks: Float32Array[] = [];
    let off = 0;
    const put = (name: string, shape: number[], data: Float32Array) => {
      entries.push({ name, shape, offset: off, length: data.length });
      chunks.push(data);
      off += data.length;
    };
    const putVar = (prefix: string, k: string, v: tf.Tensor) => {
      const t = toTorchLayout(k, v.shape, Float32Array.from(v.dataSync()));
      put(prefix + k, t.shape, t.data);
    };
    for (const [k, v] of [...m.params, ...m.buffers]) putVar('state/', k, v);
    const xr = Rng.from(5, 'x');
    const x = tf.tensor4d(Float32Array.from({ length: 2 * S * S * 3 }, () => xr.normal()), [2, S, S, 3]);
    const mask = m.makeMask(2, Rng.from(5, 'mask', 0));
    const nchw = (t: tf.Tensor) => tf.tidy(() => Float32Array.from(t.rank === 4 ? tf.transpose(t, [0, 3, 1, 2]).dataSync() : t.dataSync()));
    put('x', [2, 3, S, S], nchw(x));
    put('mask', [2, 1, S / 32, S / 32], nchw(mask));
    const feats = m.encode(x, mask, { training: true });
    feats.forEach((f, i) => put(`feat${i}`, [f.shape[0], f.shape[3], f.shape[1], f.shape[2]], nchw(f)));
    tf.dispose(feats);
    const keys = [...m.params.keys()];
    const vars = keys.map((k) => m.params.get(k)!);
    tf.tidy(() => {
      let pred: Float32Array = new Float32Array();
      const { value, grads } = tf.variableGrads(() => {
        const o = m.forward(x, mask, { training: true });
        pred = nchw(o.pred);
        return o.loss;
      }, vars);
      keys.forEach((k, i) => putVar('grad/', k, grads[vars[i]!.name]!));
      put('pred', [2, 3, S, S], pred);
      put('loss', [], Float32Array.from(value.dataSync()));
    });
    for (const [k, v] of m.buffers) putVar('after/', k, v);
    const ev = m.reconstruct(x, mask);
    put('eval_loss', [], Float32Array.from(ev.loss.dataSync()));
    put('eval_composite', [2, 3, S, S], nchw(ev.composite));
    tf.dispose([x, mask, ev.loss, ev.composite, ev.masked, ev.pred]);
    const all = new Float32Array(off);
    let p = 0;
    for (const c of chunks) {
      all.set(c, p);
      p += c.length;
    }
    const base = path.join(dir, enc);
    writeFileSync(base + '.bin', Buffer.from(all.buffer));
    const r0 = resolveEncoder(enc);
    writeFileSync(base + '.json', JSON.stringify({ ...r0, S, maskRatio: cfg.mask_ratio, decoderWidth: cfg.decoder.width, entries }));
    return base;
  } finally {
    m.dispose();
  }
}

async function parity(t: TestContext, encs: string[]): Promise<void> {
  const version = torchAvailable();
  if (!version) {
    t.skip(pythonMissing('torch and numpy'));
    return;
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'spark-parity-'));
  try {
    const args = encs.map((e) => `${e}=${dump(e, dir)}`);
    const script = path.join(dir, 'ref.py');
    writeFileSync(script, REFERENCE);
    const env = { ...process.env, OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' };
    const r = spawnSync(PYTHON, [script, ...args], { encoding: 'utf8', timeout: 300_000, env });
    assert.equal(r.status, 0, `reference script failed:\n${r.stderr}`);
    const results = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { enc: string; lossTorch: number; grads: number; worst: Record<string, number> });
    assert.equal(results.length, encs.length);
    for (const res of results) {
      const w = res.worst;
      assert.ok(res.grads > 100, 'every parameter gradient compared');
      assert.ok(Object.keys(w).some((k) => k.startsWith('after/')), 'buffers compared');
      for (const [name, rel] of Object.entries(w)) {
        const tol = name.startsWith('grad/') ? 1e-3 : 1e-4;
        assert.ok(rel <= tol, `${res.enc} ${name}: relative max difference ${rel} > ${tol} (torch ${version})`);
      }
      const top = Object.entries(w).sort((a, b) => b[1] - a[1]).slice(0, 3);
      t.diagnostic(`${res.enc} on ${tf.getBackend()}: torch ${version}, loss ${res.lossTorch.toFixed(7)}, ${Object.keys(w).length} tensors compared, worst ${top.map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('PyTorch parity: resnet_mini and convnext_mini SparK at 64 (train step + eval), weights in PyTorch layout', async (t) => {
  await parity(t, ['resnet_mini', 'convnext_mini']);
});

/** Independent PyTorch statement of the reference (written from spec §1–§4; not generated from this port). */
const REFERENCE = String.raw`"""Independent PyTorch re-statement of the SparK reference (pretrain/encoder.py, spark.py, decoder.py, timm ResNet,
official ConvNeXt) for a parity check of the TF.js port: loads the TS model's weights by reference key (strict)."""
import json, math, sys
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F
torch.set_default_dtype(torch.float32)
torch.set_num_threads(1)

_cur_active = None

def _get_active_ex_or_ii(H, W, returning_active_ex=True):
    h_repeat, w_repeat = H // _cur_active.shape[-2], W // _cur_active.shape[-1]
    active_ex = _cur_active.repeat_interleave(h_repeat, dim=2).repeat_interleave(w_repeat, dim=3)
    return active_ex if returning_active_ex else active_ex.squeeze(1).nonzero(as_tuple=True)

def sp_conv_forward(self, x):
    x = super(type(self), self).forward(x)
    x *= _get_active_ex_or_ii(H=x.shape[2], W=x.shape[3], returning_active_ex=True)
    return x

def sp_bn_forward(self, x):
    ii = _get_active_ex_or_ii(H=x.shape[2], W=x.shape[3], returning_active_ex=False)
    bhwc = x.permute(0, 2, 3, 1)
    nc = bhwc[ii]
    nc = super(type(self), self).forward(nc)
    bchw = torch.zeros_like(bhwc)
    bchw[ii] = nc
    return bchw.permute(0, 3, 1, 2)

class SparseConv2d(nn.Conv2d):
    forward = sp_conv_forward
class SparseMaxPooling(nn.MaxPool2d):
    forward = sp_conv_forward
class SparseBatchNorm2d(nn.BatchNorm1d):
    forward = sp_bn_forward

class SparseConvNeXtLayerNorm(nn.LayerNorm):
    def __init__(self, normalized_shape, eps=1e-6, data_format="channels_last", sparse=True):
        super().__init__(normalized_shape, eps, elementwise_affine=True)
        self.data_format, self.sparse = data_format, sparse
    def forward(self, x):
        if self.data_format == "channels_last":
            ii = _get_active_ex_or_ii(H=x.shape[1], W=x.shape[2], returning_active_ex=False)
            nc = super().forward(x[ii]); out = torch.zeros_like(x); out[ii] = nc; return out
        ii = _get_active_ex_or_ii(H=x.shape[2], W=x.shape[3], returning_active_ex=False)
        bhwc = x.permute(0, 2, 3, 1)
        nc = super().forward(bhwc[ii]); out = torch.zeros_like(bhwc); out[ii] = nc
        return out.permute(0, 3, 1, 2)

class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.conv1 = SparseConv2d(inplanes, planes, 1, bias=False); self.bn1 = SparseBatchNorm2d(planes)
        self.conv2 = SparseConv2d(planes, planes, 3, stride=stride, padding=1, bias=False); self.bn2 = SparseBatchNorm2d(planes)
        self.conv3 = SparseConv2d(planes, planes * 4, 1, bias=False); self.bn3 = SparseBatchNorm2d(planes * 4)
        self.downsample = downsample
    def forward(self, x):
        s = x
        x = F.relu(self.bn1(self.conv1(x))); x = F.relu(self.bn2(self.conv2(x))); x = self.bn3(self.conv3(x))
        if self.downsample is not None: s = self.downsample(s)
        return F.relu(x + s)

class ResNet(nn.Module):
    def __init__(self, layers, width):
        super().__init__()
        self.conv1 = SparseConv2d(3, width, 7, stride=2, padding=3, bias=False); self.bn1 = SparseBatchNorm2d(width)
        self.maxpool = SparseMaxPooling(3, 2, 1)
        inplanes = width
        for s in range(4):
            p = width * 2 ** s; blocks = []
            for b in range(layers[s]):
                stride = 2 if (b == 0 and s > 0) else 1
                ds = nn.Sequential(SparseConv2d(inplanes, 4 * p, 1, stride=stride, bias=False), SparseBatchNorm2d(4 * p)) if b == 0 else None
                blocks.append(Bottleneck(inplanes, p, stride, ds)); inplanes = 4 * p
            setattr(self, f'layer{s+1}', nn.Sequential(*blocks))
        self.chs = [4 * width * 2 ** s for s in range(4)]
    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        ls = []
        for s in range(4): x = getattr(self, f'layer{s+1}')(x); ls.append(x)
        return ls

class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = SparseConv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = SparseConvNeXtLayerNorm(dim, 1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim); self.act = nn.GELU(); self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))
    def forward(self, x):
        inp = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = (self.gamma * x).permute(0, 3, 1, 2)
        x = x * _get_active_ex_or_ii(H=x.shape[2], W=x.shape[3], returning_active_ex=True)
        return inp + x

class ConvNeXt(nn.Module):
    def __init__(self, depths, dims):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(SparseConv2d(3, dims[0], 4, stride=4), SparseConvNeXtLayerNorm(dims[0], 1e-6, 'channels_first'))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(SparseConvNeXtLayerNorm(dims[i], 1e-6, 'channels_first'), SparseConv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = nn.ModuleList([nn.Sequential(*[Block(dims[i]) for _ in range(depths[i])]) for i in range(4)])
        self.chs = list(dims)
    def forward(self, x):
        ls = []
        for i in range(4): x = self.stages[i](self.downsample_layers[i](x)); ls.append(x)
        return ls

class SparseEncoder(nn.Module):
    def __init__(self, cnn):
        super().__init__(); self.sp_cnn = cnn
    def forward(self, x): return self.sp_cnn(x)

class UNetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up_sample = nn.ConvTranspose2d(cin, cin, kernel_size=4, stride=2, padding=1, bias=True)
        self.conv = nn.Sequential(nn.Conv2d(cin, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
    def forward(self, x): return self.conv(self.up_sample(x))

class LightDecoder(nn.Module):
    def __init__(self, width):
        super().__init__()
        ch = [width // 2 ** i for i in range(6)]
        self.width = width
        self.dec = nn.ModuleList([UNetBlock(a, b) for a, b in zip(ch[:-1], ch[1:])])
        self.proj = nn.Conv2d(ch[-1], 3, 1, 1, bias=True)
    def forward(self, to_dec):
        x = 0
        for i, d in enumerate(self.dec):
            if i < len(to_dec): x = x + to_dec[i]
            x = d(x)
        return self.proj(x)

class SparK(nn.Module):
    def __init__(self, enc, dec, S, mask_ratio, norm):
        super().__init__()
        self.sparse_encoder, self.dense_decoder = enc, dec
        self.fmap = S // 32
        self.mask_tokens = nn.ParameterList(); self.densify_norms = nn.ModuleList(); self.densify_projs = nn.ModuleList()
        e_widths = list(enc.sp_cnn.chs); d = dec.width
        for i in range(4):
            e = e_widths.pop()
            self.mask_tokens.append(nn.Parameter(torch.zeros(1, e, 1, 1)))
            self.densify_norms.append(SparseBatchNorm2d(e) if norm == 'bn' else SparseConvNeXtLayerNorm(e, 1e-6, 'channels_first'))
            k = 1 if i == 0 else 3
            self.densify_projs.append(nn.Identity() if (i == 0 and e == d) else nn.Conv2d(e, d, k, 1, k // 2, bias=True))
            d //= 2
    def patchify(self, x):
        p, h = 32, self.fmap; B, C = x.shape[:2]
        x = x.reshape(B, C, h, p, h, p); x = torch.einsum('bchpwq->bhwpqc', x)
        return x.reshape(B, h * h, C * p * p)
    def unpatchify(self, x):
        p, h = 32, self.fmap; B = x.shape[0]
        x = x.reshape(B, h, h, p, p, 3); x = torch.einsum('bhwpqc->bchpwq', x)
        return x.reshape(B, 3, h * p, h * p)
    def forward(self, inp, active_b1ff, vis=False):
        global _cur_active
        _cur_active = active_b1ff
        active_b1hw = active_b1ff.repeat_interleave(32, 2).repeat_interleave(32, 3)
        masked = inp * active_b1hw
        feats = self.sparse_encoder(masked)[::-1]
        cur = active_b1ff; to_dec = []
        for i, f in enumerate(feats):
            f = self.densify_norms[i](f)
            f = torch.where(cur.expand_as(f), f, self.mask_tokens[i].expand_as(f))
            to_dec.append(self.densify_projs[i](f))
            cur = cur.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        rec_bchw = self.dense_decoder(to_dec)
        inp_p, rec = self.patchify(inp), self.patchify(rec_bchw)
        mean = inp_p.mean(dim=-1, keepdim=True); std = (inp_p.var(dim=-1, keepdim=True) + 1e-6) ** .5
        tgt = (inp_p - mean) / std
        l2 = ((rec - tgt) ** 2).mean(dim=2)
        non_active = active_b1ff.logical_not().int().view(active_b1ff.shape[0], -1)
        loss = l2.mul(non_active).sum() / (non_active.sum() + 1e-8)
        if vis:
            rec_or_inp = torch.where(active_b1hw, inp, self.unpatchify(rec * std + mean))
            return loss, rec_bchw, rec_or_inp
        return loss, rec_bchw

def main(enc, base):
    meta = json.load(open(base + '.json'))
    data = np.fromfile(base + '.bin', dtype=np.float32)
    T = {e['name']: torch.from_numpy(data[e['offset']:e['offset'] + e['length']].copy()).reshape(e['shape']) for e in meta['entries']}
    S = meta['S']
    if meta['family'] == 'resnet': cnn, norm = ResNet(meta['layers'], meta['width']), 'bn'
    else: cnn, norm = ConvNeXt(meta['depths'], meta['dims']), 'ln'
    model = SparK(SparseEncoder(cnn), LightDecoder(meta['decoderWidth']), S, meta['maskRatio'], norm)
    sd = model.state_dict()
    state = {}
    for k, v in sd.items():
        t = T['state/' + k]
        state[k] = t.long() if v.dtype == torch.int64 else t
    missing = set(sd) ^ {n[6:] for n in T if n.startswith('state/')}
    assert not missing, f'key mismatch: {sorted(missing)[:10]}'
    model.load_state_dict(state, strict=True)
    model.train()
    x, mask = T['x'], T['mask'].bool()
    worst = {}
    def cmp(name, a, b, tol=None):
        a = a.detach().float(); b = b.detach().float()
        assert a.shape == b.shape, (name, tuple(a.shape), tuple(b.shape))
        d = (a - b).abs().max().item(); scale = max(1.0, b.abs().max().item())
        worst[name] = d / scale
    global _cur_active
    _cur_active = mask
    feats = model.sparse_encoder(x * mask.repeat_interleave(32, 2).repeat_interleave(32, 3))
    for i in range(4):
        cmp(f'feat{i}', T[f'feat{i}'], feats[i])
        m = mask.repeat_interleave(feats[i].shape[2] // mask.shape[2], 2).repeat_interleave(feats[i].shape[3] // mask.shape[3], 3)
        assert (feats[i] * (~m)).abs().max().item() == 0, 'reference leaks'
    model.zero_grad()
    loss, rec = model(x, mask)
    loss.backward()
    cmp('loss', T['loss'], loss)
    cmp('pred', T['pred'], rec)
    ng = 0
    for k, p in model.named_parameters():
        cmp('grad/' + k, T['grad/' + k], p.grad, 1e-3); ng += 1
    for k, b in model.named_buffers():
        cmp('after/' + k, T['after/' + k], b.float())
    model.eval()
    with torch.no_grad():
        el, _, comp = model(x, mask, vis=True)
    cmp('eval_loss', T['eval_loss'], el)
    cmp('eval_composite', T['eval_composite'], comp)
    print(json.dumps({'enc': enc, 'lossTorch': loss.item(), 'grads': ng, 'worst': worst}))

for a in sys.argv[1:]:
    enc, base = a.split('=', 1)
    main(enc, base)
`;
