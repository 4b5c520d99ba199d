#!/usr/bin/env python3
"""Loads a spark-exported encoder .safetensors into PyTorch and prints its stage outputs on a given input.

    python3 scripts/check-export.py <encoder.safetensors> <family> <input.pth> <out.pth> [--timm NAME]

family: 'resnet' or 'convnext' — the narrow fixture models of make-torch-fixtures.py (strict load), or with
--timm NAME the real timm model of that name, or --timm resnet:L1,L2,L3,L4 a timm ResNet with Bottleneck blocks
(strict=False; prints the missing/unexpected keys as JSON).
Reads safetensors by hand (JSON header + raw little-endian bytes), so only torch is needed.
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def read_safetensors(path):
    with open(path, 'rb') as f:
        raw = f.read()
    (n,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    dtypes = {'F32': torch.float32, 'I64': torch.int64, 'F64': torch.float64, 'I32': torch.int32}
    out = {}
    for k, v in header.items():
        if k == '__metadata__':
            continue
        b, e = v['data_offsets']
        out[k] = torch.frombuffer(bytearray(raw[base + b:base + e]), dtype=dtypes[v['dtype']]).reshape(v['shape']).clone()
    return out, header.get('__metadata__', {})


def stub_torchvision_if_broken():
    """timm imports torchvision for its data transforms only; a torchvision built for another torch fails at
    import (operator torchvision::nms does not exist). Model definitions don't need it, so stand in a stub."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        pass
    import importlib.abc
    import importlib.machinery
    import types

    class Meta(type):
        def __getattr__(cls, name):
            if name.startswith('__'):
                raise AttributeError(name)
            return dummy(name)

    def dummy(name):
        return Meta(name, (), {'__init__': lambda self, *a, **k: None, '__call__': lambda self, *a, **k: None})

    class Anything(types.ModuleType):
        __path__ = []

        def __getattr__(self, name):
            if name.startswith('__'):
                raise AttributeError(name)
            return dummy(name)

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == 'torchvision' or name.startswith('torchvision.'):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return Anything(spec.name)

        def exec_module(self, module):
            pass

    for k in [k for k in sys.modules if k == 'torchvision' or k.startswith('torchvision.')]:
        del sys.modules[k]
    sys.meta_path.insert(0, Finder())


def main():
    path, family, inp_path, out_path = sys.argv[1:5]
    sd, meta = read_safetensors(path)
    if '--timm' in sys.argv:
        stub_torchvision_if_broken()
        import timm
        name = sys.argv[sys.argv.index('--timm') + 1]
        if name.startswith('resnet:'):  # a timm ResNet with Bottleneck blocks and these layer counts, e.g. resnet:1,1,1,1
            from timm.models.resnet import Bottleneck, ResNet
            model = ResNet(block=Bottleneck, layers=[int(v) for v in name.split(':')[1].split(',')])
        else:
            model = timm.create_model(name, pretrained=False)
        res = model.load_state_dict(sd, strict=False)
        print(json.dumps({'missing': list(res.missing_keys), 'unexpected': list(res.unexpected_keys)}))
        return
    import importlib.util
    spec = importlib.util.spec_from_file_location('fx', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'make-torch-fixtures.py'))
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    model = fx.ResNet(**fx.RESNET) if family == 'resnet' else fx.ConvNeXt(**fx.CONVNEXT)
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = torch.load(inp_path)['input']
    with torch.no_grad():
        outs = model(x)
    torch.save({f'out{i}': o for i, o in enumerate(outs)}, out_path)
    print(json.dumps({'ok': True, 'keys': len(sd)}))


if __name__ == '__main__':
    main()
