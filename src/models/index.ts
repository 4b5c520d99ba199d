/** Public API of the models module (contract in DEVELOPERS.md, "models"). */
export * from './registry.js';
export * from './ops.js';
export * from './params.js';
export { defineResNet, resnetDropPathRates, type EncoderCore, type ForwardCtx } from './resnet.js';
export { defineConvNeXt, linspace } from './convnext.js';
export { defineLightDecoder, type LightDecoder } from './decoder.js';
export * from './spark.js';
export * from './weights.js';
