#!/usr/bin/env python3
"""Writes the small PyTorch checkpoints that test/interop-*.test.ts read (test/fixtures/interop/).

Run with the CPU torch wheel the local index has:  pip install 'torch==2.13.0+cpu'  then
    python3 scripts/make-torch-fixtures.py
The models are narrow versions of the two encoder families with the reference key names: timm's ResNet (v1.5
Bottleneck) and the official ConvNeXt (spec §2.4, §2.5, §8.2). Everything is seeded, so the files are reproducible
up to torch's serialisation ids.
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'interop')
torch.manual_seed(0)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        s = x
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.downsample is not None:
            s = self.downsample(s)
        return F.relu(x + s)


class ResNet(nn.Module):
    def __init__(self, layers, width):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        inplanes = width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                ds = None
                if j == 0:
                    ds = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
                blocks.append(Bottleneck(inplanes, planes, stride if j == 0 else 1, ds))
                inplanes = planes * 4
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        outs = []
        for i in range(4):
            x = getattr(self, f'layer{i + 1}')(x)
            outs.append(x)
        return outs


class LayerNormCF(nn.Module):
    """channels_first LayerNorm of the official ConvNeXt."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        s = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(F.gelu(self.pwconv1(self.norm(x))))
        x = (self.gamma * x).permute(0, 3, 1, 2)
        return s + x


class ConvNeXt(nn.Module):
    def __init__(self, depths, dims):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNormCF(dims[0])))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(LayerNormCF(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*[Block(dims[i]) for _ in range(depths[i])]) for i in range(4))

    def forward(self, x):
        outs = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            outs.append(x)
        return outs


def randomise(model):
    """Non-trivial values everywhere (running stats, γ, layer scale) so a wrong mapping cannot hide."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith('num_batches_tracked'):
                t.fill_(7)
            elif name.endswith('running_var'):
                t.copy_(torch.rand_like(t) + 0.5)
            elif name.endswith('running_mean'):
                t.copy_(torch.randn_like(t) * 0.1)
            elif name.endswith('gamma'):
                t.copy_(torch.rand_like(t) * 0.5 + 0.25)
            elif t.dim() == 1:
                t.copy_(torch.randn_like(t) * 0.1 + (1.0 if name.endswith('weight') else 0.0))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn_like(t) / fan_in ** 0.5)


RESNET = dict(layers=[1, 1, 1, 1], width=8)
CONVNEXT = dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64])
INPUT = 64


def light_decoder_state(width, enc_chs, input_size):
    """Keys and shapes of the with-decoder SparK module (spec §3, §8.2) for a ResNet encoder, random values."""
    sd = collections.OrderedDict()
    sd['imn_m'] = torch.randn(1, 3, 1, 1)
    sd['imn_s'] = torch.randn(1, 3, 1, 1)
    sd['norm_black'] = torch.zeros(1, 3, input_size, input_size)
    chs = [width // 2 ** i for i in range(6)]
    for k in range(5):
        cin, cout = chs[k], chs[k + 1]
        p = f'dense_decoder.dec.{k}.'
        sd[p + 'up_sample.weight'] = torch.randn(cin, cin, 4, 4) * 0.1
        sd[p + 'up_sample.bias'] = torch.randn(cin) * 0.1
        sd[p + 'conv.0.weight'] = torch.randn(cin, cin, 3, 3) * 0.1
        for bn, c in (('conv.1', cin), ('conv.4', cout)):
            sd[p + bn + '.weight'] = torch.rand(c) + 0.5
            sd[p + bn + '.bias'] = torch.randn(c) * 0.1
            sd[p + bn + '.running_mean'] = torch.randn(c) * 0.1
            sd[p + bn + '.running_var'] = torch.rand(c) + 0.5
            sd[p + bn + '.num_batches_tracked'] = torch.tensor(11)
        sd[p + 'conv.3.weight'] = torch.randn(cout, cin, 3, 3) * 0.1
    sd['dense_decoder.proj.weight'] = torch.randn(3, chs[5], 1, 1) * 0.1
    sd['dense_decoder.proj.bias'] = torch.randn(3) * 0.1
    e = list(reversed(enc_chs))
    for i in range(4):
        d = width // 2 ** i
        sd[f'densify_norms.{i}.weight'] = torch.rand(e[i]) + 0.5
        sd[f'densify_norms.{i}.bias'] = torch.randn(e[i]) * 0.1
        sd[f'densify_norms.{i}.running_mean'] = torch.randn(e[i]) * 0.1
        sd[f'densify_norms.{i}.running_var'] = torch.rand(e[i]) + 0.5
        sd[f'densify_norms.{i}.num_batches_tracked'] = torch.tensor(11)
        k = 1 if i == 0 else 3
        if not (i == 0 and e[i] == d):
            sd[f'densify_projs.{i}.weight'] = torch.randn(d, e[i], k, k) * 0.1
            sd[f'densify_projs.{i}.bias'] = torch.randn(d) * 0.1
        sd[f'mask_tokens.{i}'] = torch.randn(1, e[i], 1, 1) * 0.02
    return sd


def write_raw_zip(path, pkl_bytes, extra=None, prefix='archive'):
    """A torch-style zip with a hand-made data.pkl (for the hostile-file cases)."""
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        z.writestr(f'{prefix}/data.pkl', pkl_bytes)
        z.writestr(f'{prefix}/version', '3\n')
        for name, data in (extra or {}).items():
            z.writestr(name, data)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    r = ResNet(**RESNET).eval()
    randomise(r)
    c = ConvNeXt(**CONVNEXT).eval()
    randomise(c)
    x = torch.randn(2, 3, INPUT, INPUT)
    with torch.no_grad():
        ro = r(x)
        co = c(x)
    # 1. encoder-only, timm / official style (a plain OrderedDict from state_dict(), with _metadata)
    torch.save(r.state_dict(), os.path.join(OUT, 'resnet_timm_style.pth'))
    torch.save(c.state_dict(), os.path.join(OUT, 'convnext_official_style.pth'))
    # 2. the old wrapper (issue #58)
    torch.save({'arch': 'resnet', 'module': r.state_dict(), 'is_pretrain': False}, os.path.join(OUT, 'resnet_wrapped.pth'))
    # 3. with-decoder SparK file: module = SparK state dict with 'config', plus the training bookkeeping
    module = collections.OrderedDict()
    for k, v in r.state_dict().items():
        module['sparse_encoder.sp_cnn.' + k] = v
    enc_chs = [RESNET['width'] * 4 * 2 ** i for i in range(4)]
    module.update(light_decoder_state(32, enc_chs, INPUT))
    module['config'] = {'mask_ratio': 0.6, 'densify_norm_str': 'bn', 'sbn': False, 'hierarchy': 4,
                        'sparse_encoder.input_size': INPUT, 'dense_decoder.width': 32}
    torch.save({'args': 'Namespace(...)', 'input_size': INPUT, 'arch': 'resnet', 'epoch': 3,
                'performance_desc': '0.51 0.52', 'module': module, 'is_pretrain': True},
               os.path.join(OUT, 'resnet_withdecoder_spark_style.pth'))
    # parity data: input and the four stage outputs of both encoders (eval mode), NCHW
    parity = collections.OrderedDict(input=x)
    for i in range(4):
        parity[f'resnet.out{i}'] = ro[i]
        parity[f'convnext.out{i}'] = co[i]
    torch.save(parity, os.path.join(OUT, 'parity.pth'))

    # dtype / stride cases with their values as JSON (checks the reader independently of any model)
    import json
    g = torch.Generator().manual_seed(1)
    base = torch.randn(3, 4, generator=g)
    cases = collections.OrderedDict()
    cases['f32'] = torch.randn(2, 3, generator=g)
    cases['f32_transposed'] = base.t()                 # stride (1, 4)
    cases['f32_slice'] = base[1:, 1:3]                 # storage offset 5
    cases['f64'] = torch.randn(3, generator=g).double()
    cases['f16'] = torch.tensor([0.5, -2.0, 65504.0, 1e-4]).half()
    cases['bf16'] = torch.tensor([1.5, -3.25]).bfloat16()
    cases['i64'] = torch.tensor([[1, -2], [2 ** 40, 7]])
    cases['scalar_i64'] = torch.tensor(123)
    cases['u8'] = torch.tensor([0, 255, 7], dtype=torch.uint8)
    cases['bool'] = torch.tensor([True, False, True])
    torch.save({'tensors': cases, 'meta': {'epoch': 3, 'lr': 1.5e-3, 'name': 'x', 'flags': (True, None), 'big': 2 ** 70}},
               os.path.join(OUT, 'dtypes.pth'))
    with open(os.path.join(OUT, 'dtypes.json'), 'w') as f:
        json.dump({k: {'shape': list(v.shape), 'values': v.float().flatten().tolist()} for k, v in cases.items()}, f)

    # hostile files -------------------------------------------------------------------------------------------
    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    write_raw_zip(os.path.join(OUT, 'hostile_global.pth'), pickle.dumps(Evil(), protocol=2))
    # a storage whose declared element count does not match its bytes
    buf = io.BytesIO()
    torch.save(collections.OrderedDict(w=torch.ones(4)), buf)
    zin = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(os.path.join(OUT, 'hostile_size.pth'), 'w', zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith('/data/0'):
                data = data[:8]  # 2 floats instead of 4
            zout.writestr(info.filename, data)
    # path tricks in the zip
    write_raw_zip(os.path.join(OUT, 'hostile_path.pth'), pickle.dumps(collections.OrderedDict(), protocol=2),
                  extra={'../../evil/data/0': b'x'})
    # an opcode outside the allowed set (INST via protocol 0 'i')
    write_raw_zip(os.path.join(OUT, 'hostile_opcode.pth'), b'\x80\x02(i__builtin__\nobject\n.')
    print('wrote', sorted(os.listdir(OUT)))


if __name__ == '__main__':
    main()
