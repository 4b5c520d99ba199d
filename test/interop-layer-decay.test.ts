import { test } from 'node:test';
import assert from 'node:assert/strict';
import { layerDecay } from '../src/downstream/layer-decay.js';
import { encoderStateEntries } from '../src/models/weights.js';
import { isNoDecay } from '../src/train/optimizers.js';

const close = (a: number, b: number, tol = 5e-6) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} != ${b}`);

test('O9: ResNet-50 multipliers per layer id (lr_scale 0.7)', () => {
  const t = layerDecay('resnet50', 0.7);
  assert.equal(t.maxLayerId, 7);
  const byName: Array<[string, number, number]> = [
    ['conv1.weight', 0, 0.082354],
    ['bn1.bias', 0, 0.082354],
    ['layer1.2.conv3.weight', 1, 0.117649],
    ['layer2.0.conv1.weight', 2, 0.16807],
    ['layer2.1.bn2.weight', 2, 0.16807],
    ['layer2.2.conv1.weight', 3, 0.2401],
    ['layer2.3.downsample.0.weight', 3, 0.2401],
    ['layer3.0.conv1.weight', 4, 0.343],
    ['layer3.2.conv1.weight', 4, 0.343],
    ['layer3.3.conv1.weight', 5, 0.49],
    ['layer3.5.bn3.bias', 5, 0.49],
    ['layer4.0.downsample.1.weight', 6, 0.7],
    ['fc.weight', 7, 1.0],
  ];
  for (const [name, id, mult] of byName) {
    assert.equal(t.layerId(name), id, name);
    close(t.scale(id), mult);
  }
});

test('O9: ResNet-101/152/200 layer counts and stem multipliers (lr_scale 0.8)', () => {
  const cases: Array<[string, number, number]> = [
    ['resnet101', 13, 0.054976],
    ['resnet152', 14, 0.04398],
    ['resnet200', 18, 0.018014],
  ];
  for (const [name, maxId, stem] of cases) {
    const t = layerDecay(name, 0.8);
    assert.equal(t.maxLayerId, maxId, name);
    close(t.scale(t.layerId('conv1.weight')), stem, 5e-5);
  }
  // R101 splits layer3 (23 blocks) into groups of 3: ids 4..11
  const t = layerDecay('resnet101', 0.8);
  assert.equal(t.layerId('layer3.0.conv1.weight'), 4);
  assert.equal(t.layerId('layer3.22.conv1.weight'), 11);
  assert.equal(t.layerId('layer4.2.conv1.weight'), 12);
});

test('O9: ConvNeXt-S/B/L multipliers (lr_scale 0.7)', () => {
  for (const name of ['convnext_small', 'convnext_base', 'convnext_large']) {
    const t = layerDecay(name, 0.7);
    assert.equal(t.maxLayerId, 13);
    const byName: Array<[string, number, number]> = [
      ['downsample_layers.0.0.weight', 0, 0.009689],
      ['stages.0.2.dwconv.weight', 1, 0.013841],
      ['downsample_layers.1.1.weight', 2, 0.019773],
      ['stages.1.0.gamma', 2, 0.019773],
      ['downsample_layers.2.0.bias', 3, 0.028248],
      ['stages.2.2.pwconv1.weight', 3, 0.028248],
      ['stages.2.26.norm.weight', 11, 0.49],
      ['downsample_layers.3.1.weight', 12, 0.7],
      ['stages.3.2.pwconv2.bias', 12, 0.7],
      ['norm.weight', 13, 1.0],
      ['head.weight', 13, 1.0],
    ];
    for (const [key, id, mult] of byName) {
      assert.equal(t.layerId(key), id, `${name} ${key}`);
      close(t.scale(id), mult);
    }
  }
});

test('O9: param-group counts (layer × decay/no-decay) over the real parameter names', () => {
  const groups = (name: string, scale: number) => {
    const t = layerDecay(name, scale);
    const seen = new Set<string>();
    for (const e of encoderStateEntries(name, { numClasses: 1000 })) {
      if (e.role !== 'param') continue;
      seen.add(`${t.layerId(e.key)}/${isNoDecay(e.key, e.tfShape) ? 'no_decay' : 'decay'}`);
    }
    return seen.size;
  };
  assert.equal(groups('resnet50', 0.7), 16);
  assert.equal(groups('resnet101', 0.8), 28);
  assert.equal(groups('resnet152', 0.8), 30);
  assert.equal(groups('resnet200', 0.8), 38);
  assert.equal(groups('convnext_small', 0.7), 28);
  assert.throws(() => layerDecay('resnet50', 0.7).layerId('head.weight'), /no layer id/);
});
