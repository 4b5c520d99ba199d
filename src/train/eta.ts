/**
 * The ETA of a run: remaining steps × a bias-corrected EMA of the step time. The first step of every process is
 * left out (it pays for kernel set-up, first allocations and the loader's first batches, often twice a normal step:
 * the ETA it gave was ~2× too high), so the ETA is unknown (NaN) until a second step has been timed.
 */
export class EtaEstimator {
  private raw = 0;
  private count = 0;
  private seen = 0;

  constructor(private readonly beta = 0.9) {}

  /** Fold in the wall seconds of one step. */
  observe(seconds: number): void {
    this.seen++;
    if (this.seen === 1 || !Number.isFinite(seconds)) return; // warm-up step
    this.raw = this.beta * this.raw + (1 - this.beta) * seconds;
    this.count++;
  }

  /** Mean seconds per step (NaN until one non-warm-up step was observed). */
  get secondsPerStep(): number {
    return this.count === 0 ? NaN : this.raw / (1 - Math.pow(this.beta, this.count));
  }

  /** Seconds left for `remainingSteps` steps (NaN while unknown, 0 when none are left). */
  eta(remainingSteps: number): number {
    if (remainingSteps <= 0) return 0;
    return remainingSteps * this.secondsPerStep;
  }
}
