/**
 * How a sweep trial is named for people: `trial 2/3` for the trial at index 1 of 3. Indices stay 0-based wherever a
 * machine reads them (sweep.json, `trials/001/`, the `sweep.trial` tag, Slurm array task ids, `spark sweep trial
 * <dir> <i>`, summary.csv).
 */
export function trialLabel(index: number, total?: number | null): string {
  return total ? `trial ${index + 1}/${total}` : `trial ${index + 1}`;
}
