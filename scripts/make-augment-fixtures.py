#!/usr/bin/env python3
"""Writes test/fixtures/augment/trivial-augment-pil.json: what Pillow makes of each TrivialAugmentWide op, the oracle
of test/data-augment.test.ts (src/data/trivial-augment.ts).

Needs only Pillow (`pip install pillow`; written with Pillow 12.3.0). torchvision is not needed: for PIL images its
`_apply_op` (interpolation BICUBIC, fill None → 0) reduces to the Pillow calls below, which is what this script
makes, with torchvision's inverse affine matrix written out.

    python3 scripts/make-augment-fixtures.py
"""
import base64
import json
import math
import os

import PIL
from PIL import Image, ImageEnhance, ImageOps

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'augment')


def test_image(w, h):
    """A deterministic, non-symmetric RGB image with edges, gradients and a narrow value range in one channel."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            r = (x * 255) // max(1, w - 1)
            g = (37 * x + 91 * y + (x * y) % 13 * 7) % 256
            b = 60 + ((x // 3 + y // 2) % 2) * 90 + (y * 5) % 11
            px += bytes((r, g, b))
    return Image.frombytes('RGB', (w, h), bytes(px))


def inverse_affine(center, angle, translate, scale, shear):
    """Output → input coordinates of rotate(angle) ∘ shear ∘ translate about `center` (degrees)."""
    rot = math.radians(angle)
    sx = math.radians(shear[0])
    sy = math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [x / scale for x in [d, -b, 0.0, -c, a, 0.0]]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def affine(img, m):
    return img.transform(img.size, Image.AFFINE, m, Image.BICUBIC, fillcolor=(0, 0, 0))


def apply_op(img, op, mag):
    w, h = img.size
    if op == 'Identity':
        return img
    if op == 'ShearX':
        return affine(img, inverse_affine([0, 0], 0.0, [0.0, 0.0], 1.0, [math.degrees(math.atan(mag)), 0.0]))
    if op == 'ShearY':
        return affine(img, inverse_affine([0, 0], 0.0, [0.0, 0.0], 1.0, [0.0, math.degrees(math.atan(mag))]))
    if op == 'TranslateX':
        return affine(img, inverse_affine([w * 0.5, h * 0.5], 0.0, [float(int(mag)), 0.0], 1.0, [0.0, 0.0]))
    if op == 'TranslateY':
        return affine(img, inverse_affine([w * 0.5, h * 0.5], 0.0, [0.0, float(int(mag))], 1.0, [0.0, 0.0]))
    if op == 'Rotate':
        return img.rotate(mag, Image.BICUBIC, expand=False, fillcolor=(0, 0, 0))
    if op == 'Brightness':
        return ImageEnhance.Brightness(img).enhance(1.0 + mag)
    if op == 'Color':
        return ImageEnhance.Color(img).enhance(1.0 + mag)
    if op == 'Contrast':
        return ImageEnhance.Contrast(img).enhance(1.0 + mag)
    if op == 'Sharpness':
        return ImageEnhance.Sharpness(img).enhance(1.0 + mag)
    if op == 'Posterize':
        return ImageOps.posterize(img, int(mag))
    if op == 'Solarize':
        return ImageOps.solarize(img, mag)
    if op == 'AutoContrast':
        return ImageOps.autocontrast(img)
    if op == 'Equalize':
        return ImageOps.equalize(img)
    raise ValueError(op)


# magnitudes as float32 values of torch.linspace bins (and a few off-grid ones), both signs
F32 = {
    'shear': [0.0, 0.09900000691413879, 0.4950000047683716, 0.9900000095367432, -0.32999998331069946, -0.9900000095367432],
    'translate': [0.0, 1.0666667222976685, 8.533333778381348, 16.0, 32.0, -5.333333492279053, -32.0],
    'rotate': [0.0, 4.5, 30.0, 45.0, 90.0, 135.0, -4.5, -90.0, -135.0, 180.0, 270.0],
    'enhance': [0.0, 0.09900000691413879, 0.4950000047683716, 0.9900000095367432, -0.32999998331069946, -0.9900000095367432],
    'posterize': [8, 7, 5, 2],
    'solarize': [255.0, 246.5, 127.5, 128.0, 8.5, 0.0],
}
OPS = [
    ('Identity', [0.0]),
    ('ShearX', F32['shear']),
    ('ShearY', F32['shear']),
    ('TranslateX', F32['translate']),
    ('TranslateY', F32['translate']),
    ('Rotate', F32['rotate']),
    ('Brightness', F32['enhance']),
    ('Color', F32['enhance']),
    ('Contrast', F32['enhance']),
    ('Sharpness', F32['enhance']),
    ('Posterize', F32['posterize']),
    ('Solarize', F32['solarize']),
    ('AutoContrast', [0.0]),
    ('Equalize', [0.0]),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    images = []
    for (w, h) in [(16, 16), (13, 9)]:
        img = test_image(w, h)
        cases = []
        for op, mags in OPS:
            for m in mags:
                out = apply_op(img, op, m)
                assert out.size == img.size and out.mode == 'RGB'
                cases.append({'op': op, 'magnitude': m, 'pixels': base64.b64encode(out.tobytes()).decode()})
        images.append({'width': w, 'height': h, 'pixels': base64.b64encode(img.tobytes()).decode(), 'cases': cases})
    doc = {'pillow': PIL.__version__, 'images': images}
    with open(os.path.join(OUT, 'trivial-augment-pil.json'), 'w') as f:
        json.dump(doc, f, indent=0)
        f.write('\n')


if __name__ == '__main__':
    main()
