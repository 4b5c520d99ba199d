/**
 * `tf.variableGrads` with the memory behaviour of PyTorch's autograd (issue 12 item 4).
 *
 * tfjs's own `engine.gradients` (tfjs-core 4.x) records the tape, then walks it backwards but releases nothing until
 * the whole backward pass is over: every activation gradient it has computed (the `dy` of every intermediate tensor)
 * and every tensor saved for the backward pass stay alive to the end, and so do the intermediates a custom gradient
 * computes (they belong to the enclosing 'backward' scope). At the end of the backward pass the whole network's
 * activations and their gradients are alive together: for a ResNet-50 SparK step that is most of its peak memory.
 *
 * `leanVariableGrads` walks the same tape in the same order with the same gradient functions and the same
 * accumulation (a gradient that reaches a tensor twice is summed with `add`, as tfjs does), so its gradients are
 * identical bit for bit. What it changes is when tensors are released:
 * - a node's output gradients are released right after the node's backward (nothing later reads them: the tape is
 *   in topological order, so every consumer of a tensor comes after its producer and is processed before it),
 *   unless the node passed one through unchanged as an input's gradient;
 * - the node's saved tensors are released right after its backward (they were kept only for it);
 * - everything a node's gradient function makes besides its input gradients is released at once (one `tidy` around
 *   the node's backward);
 * - an input gradient that is summed into an existing one is released after the sum.
 *
 * It uses the engine's tape (`startTape` / `endTape` / `state.activeTape`), which tfjs-core does not export as API;
 * the version is pinned in package.json and test/train-lean-grads checks the result against `tf.variableGrads`.
 */
import * as tf from '@tensorflow/tfjs';

interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  gradient?: (dys: tf.Tensor[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

/** The parts of tfjs-core's Engine this module uses (not in its public typings). */
interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  startTape(): void;
  endTape(): void;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  tidy<T extends tf.TensorContainer>(nameOrFn: string | (() => T), fn?: () => T): T;
}

function engine(): EngineInternals {
  const e = tf.engine() as unknown as EngineInternals;
  if (typeof e.startTape !== 'function' || typeof e.endTape !== 'function' || typeof e.scopedRun !== 'function' || typeof e.state?.gradientDepth !== 'number') {
    throw new Error('leanVariableGrads: this tfjs-core has no engine tape API (startTape/endTape/scopedRun/state.gradientDepth); check the pinned @tensorflow/tfjs version');
  }
  return e;
}

/** The nodes on a path from one of `xs` to `y`, inputs pruned to those that depend on `xs` (tfjs's own filter). */
function nodesFromXToY(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set<number>(xs.map((x) => x.id));
  const nodeFromX = new Set<number>();
  for (const node of tape) {
    if (Object.values(node.inputs).some((t) => fromX.has(t.id))) {
      for (const o of node.outputs) fromX.add(o.id);
      nodeFromX.add(node.id);
    }
  }
  const toY = new Set<number>([y.id]);
  const nodeToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i]!;
    if (node.outputs.some((o) => toY.has(o.id))) {
      for (const t of Object.values(node.inputs)) toY.add(t.id);
      nodeToY.add(node.id);
    }
  }
  const out: TapeNode[] = [];
  for (const node of tape) {
    if (!nodeFromX.has(node.id) || !nodeToY.has(node.id)) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const [name, t] of Object.entries(node.inputs)) if (fromX.has(t.id)) inputs[name] = t;
    out.push({ ...node, inputs });
  }
  return out;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Gradients of the scalar `f()` with respect to `varList`, as `tf.variableGrads(f, varList)` returns them
 * (`grads` keyed by variable name; a variable the value does not depend on is left out), releasing each tensor of
 * the backward pass as soon as nothing needs it any more.
 */
export function leanVariableGrads(f: () => tf.Scalar, varList: tf.Variable[]): { value: tf.Scalar; grads: tf.NamedTensorMap } {
  if (varList.length === 0) throw new Error('leanVariableGrads: empty variable list');
  const e = engine();
  if (e.state.gradientDepth !== 0) {
    // inside another gradient computation (higher-order gradients): the tape must outlive this call
    return tf.variableGrads(f, varList);
  }
  const y = e.scopedRun(() => e.startTape(), () => e.endTape(), () => e.tidy('forward', f));
  const tape = e.state.activeTape ?? [];
  try {
    if (!(y instanceof tf.Tensor) || y.rank !== 0) {
      tf.dispose(y);
      throw new Error('leanVariableGrads: f() must return a scalar tensor');
    }
    const nodes = nodesFromXToY(tape, varList, y);
    return e.tidy('backward', () => {
      const acc = new Map<number, tf.Tensor>();
      acc.set(y.id, tf.onesLike(y));
      for (let i = nodes.length - 1; i >= 0; i--) {
        const node = nodes[i]!;
        if (!node.gradient) throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
        const dys = node.outputs.map((o) => acc.get(o.id) ?? null);
        const names = Object.keys(node.inputs);
        // the node's backward in one scope: only the input gradients leave it
        const dxs = tf.tidy(() => {
          const g = node.gradient!(dys as tf.Tensor[]);
          return names.map((name) => {
            if (!(name in g)) throw new Error(`Cannot backprop through input ${name}. Available gradients found: ${Object.keys(g)}.`);
            return g[name]!();
          });
        });
        const kept = new Set<tf.Tensor>();
        names.forEach((name, k) => {
          const dx = dxs[k]!;
          const x = node.inputs[name]!;
          if (dx.dtype !== 'float32') throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input ${name} must have 'float32' dtype, but has '${dx.dtype}'`);
          if (!sameShape(dx.shape, x.shape)) throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input '${name}' has shape '${dx.shape}', which does not match the shape of the input '${x.shape}'`);
          const cur = acc.get(x.id);
          if (cur === undefined) {
            acc.set(x.id, dx);
            kept.add(dx);
          } else {
            acc.set(x.id, tf.add(cur, dx));
            cur.dispose();
            if (!dys.includes(dx) && !kept.has(dx)) dx.dispose();
          }
        });
        // nothing reads this node's output gradients or saved tensors again
        for (const o of node.outputs) {
          const dy = acc.get(o.id);
          acc.delete(o.id);
          if (dy && !kept.has(dy)) dy.dispose();
        }
        if (node.saved) for (const t of node.saved) t.dispose();
      }
      const grads: tf.NamedTensorMap = {};
      for (const v of varList) {
        const g = acc.get(v.id);
        if (g) grads[v.name] = g;
      }
      return { value: y, grads };
    });
  } finally {
    for (const node of tape) if (node.saved) for (const t of node.saved) t.dispose();
    e.state.activeTape = null;
  }
}
