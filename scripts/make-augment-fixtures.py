#!/usr/bin/env python3
"""Writes the oracles of the fine-tuning auto-augmentations:

* test/fixtures/augment/trivial-augment-pil.json: what Pillow makes of each TrivialAugmentWide op, the oracle of
  test/data-augment.test.ts (src/data/trivial-augment.ts). torchvision is not needed: for PIL images its `_apply_op`
  (interpolation BICUBIC, fill None → 0) reduces to the Pillow calls below, with torchvision's inverse affine matrix
  written out.
* test/fixtures/augment/auto-augment-timm.json: what timm's own AutoAugment code makes of (a) each op at several
  magnitudes and signs and (b) each 'v0' sub-policy under fixed random draws (which ops run, which signs flip),
  the oracle of test/data-auto-augment.test.ts (src/data/auto-augment.ts). timm's `random` is replaced by a recorder
  that returns the draws the fixture lists, so the TypeScript side can replay exactly the same decisions.

Needs Pillow (written with Pillow 12.3.0) and, for the second file, timm's `timm/data/auto_augment.py` (written with
timm 1.0.29, whose 'v0' ops and level functions are those of the reference's timm 0.5.4 for magnitudes ≤ 10) and
numpy, which that module imports. The module is loaded from its file, so the timm package (and torch) need not import.

    .venv-ref/bin/python scripts/make-augment-fixtures.py      # both files
    python3 scripts/make-augment-fixtures.py --no-timm           # only the TrivialAugmentWide file
"""
import base64
import importlib.util
import json
import math
import os
import sys

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


def load_timm_auto_augment():
    """timm/data/auto_augment.py as a standalone module (it imports only PIL, numpy and the standard library)."""
    spec = importlib.util.find_spec('timm')
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('timm is not installed (needed for auto-augment-timm.json; pass --no-timm to skip it)')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'data', 'auto_augment.py')
    mspec = importlib.util.spec_from_file_location('timm_auto_augment', path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    version = None
    try:
        from importlib.metadata import version as _v
        version = _v('timm')
    except Exception:
        pass
    return mod, version


class Draws:
    """Stands in for the `random` module inside timm's auto_augment: `random()` returns the listed values in order,
    `choice(seq)` returns seq[index]; every value handed out is recorded."""

    def __init__(self, values=(), index=0):
        self.values = list(values)
        self.index = index
        self.used = []
        self.choices = 0

    def random(self):
        v = self.values.pop(0)
        self.used.append(v)
        return v

    def choice(self, seq):
        self.choices += 1
        return seq[self.index]


IMAGENET_MEAN = (0.485, 0.456, 0.406)


def aa_hparams(w, h):
    """timm transforms_imagenet_train's AutoAugment hparams for this input size, with interpolation 'bicubic'."""
    return dict(
        translate_const=int(min(w, h) * 0.45),
        img_mean=tuple([min(255, round(255 * x)) for x in IMAGENET_MEAN]),
        interpolation=Image.BICUBIC,
    )


AA_OPS = ['AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'SolarizeAdd', 'Color', 'Contrast',
          'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'TranslateXRel', 'TranslateYRel']
AA_SIGNED = {'Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'TranslateXRel', 'TranslateYRel'}
AA_LEVELS = [0, 1, 4, 7, 10]


def auto_augment_doc():
    aa, version = load_timm_auto_augment()
    images = []
    for (w, h) in [(16, 16), (13, 9)]:
        img = test_image(w, h)
        hp = aa_hparams(w, h)
        # (a) single ops through timm's AugmentOp (probability 1: no probability draw; signed ops draw their sign)
        ops = []
        for name in AA_OPS:
            levels = AA_LEVELS if aa.LEVEL_TO_ARG[name] is not None else [0]
            for level in levels:
                for negate in ([False, True] if name in AA_SIGNED else [False]):
                    draws = Draws([0.75 if negate else 0.25])
                    aa.random = draws
                    args = aa.LEVEL_TO_ARG[name](level, hp) if aa.LEVEL_TO_ARG[name] is not None else ()
                    draws = Draws([0.75 if negate else 0.25])
                    aa.random = draws
                    out = aa.AugmentOp(name, prob=1.0, magnitude=level, hparams=hp)(img)
                    assert out.size == img.size and out.mode == 'RGB'
                    assert len(draws.used) == (1 if name in AA_SIGNED else 0)
                    ops.append({'op': name, 'level': level, 'negate': negate, 'arg': args[0] if args else None,
                                'pixels': base64.b64encode(out.tobytes()).decode()})
        # (b) every 'v0' sub-policy under four patterns of draws: each op runs or not (a probability draw at or just
        # below the probability runs it, above skips it; probability 1 draws nothing), signs alternate, 0.5 keeps the
        # sign (timm negates when random() > 0.5)
        policy = aa.auto_augment_policy('v0', hp)
        assert len(policy) == 25
        subs = []
        for si, sub in enumerate(policy):
            for k in range(4):
                values = []
                for oi, op in enumerate(sub):
                    run = bool(k >> oi & 1)
                    if op.prob < 1.0:
                        values.append((op.prob if k == 3 else op.prob * 0.5) if run else (op.prob + 1.0) / 2)
                    else:
                        run = True
                    if run and op.name in AA_SIGNED:
                        values.append([0.75, 0.25, 0.5, 0.9][(si + k + oi) % 4])
                draws = Draws(values, index=si)
                aa.random = draws
                out = aa.AutoAugment(policy)(img)
                assert draws.choices == 1 and not draws.values, (si, k)
                subs.append({'subPolicy': si, 'uniforms': draws.used, 'pixels': base64.b64encode(out.tobytes()).decode()})
        images.append({'width': w, 'height': h, 'pixels': base64.b64encode(img.tobytes()).decode(),
                       'hparams': {'translate_const': hp['translate_const'], 'img_mean': list(hp['img_mean'])},
                       'ops': ops, 'subPolicies': subs})
    policy = [[[op.name, op.prob, op.magnitude] for op in sub] for sub in aa.auto_augment_policy('v0', aa_hparams(16, 16))]
    return {'pillow': PIL.__version__, 'timm': version, 'policy': policy, 'images': images}


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
    if '--no-timm' not in sys.argv[1:]:
        with open(os.path.join(OUT, 'auto-augment-timm.json'), 'w') as f:
            json.dump(auto_augment_doc(), f, indent=0)
            f.write('\n')


if __name__ == '__main__':
    main()
