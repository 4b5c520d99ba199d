#!/usr/bin/env python3
"""Loads a spark-exported encoder .safetensors into PyTorch and prints its stage outputs on a given input.

    python3 scripts/check-export.py <encoder.safetensors> <family> <input.pth> <out.pth> [--timm NAME]

family: 'resnet' or 'convnext' — the narrow fixture models of make-torch-fixtures.py (strict load), or with
--timm NAME the real timm model of that name (strict=False; the report lists missing/unexpected keys).
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


def main():
    path, family, inp_path, out_path = sys.argv[1:5]
    sd, meta = read_safetensors(path)
    if '--timm' in sys.argv:
        import timm
        name = sys.argv[sys.argv.index('--timm') + 1]
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
