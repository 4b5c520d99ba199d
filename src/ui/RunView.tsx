/**
 * The Ink view of one run. `RunView` is a pure function of a `RunSnapshot`; the throttled subscriber re-renders
 * `RunApp` with a new snapshot (Ink's synchronous `rerender`, so the final frame is on screen before unmount).
 * `RunApp` also listens to the keyboard (Ctrl-C → graceful stop, twice → force).
 */
import React, { useEffect, useState } from 'react';
import { Box, Text, useInput, useStdin, useStdout } from 'ink';
import type { RunSnapshot } from './store.js';
import { trialLabel } from './trial-label.js';
import {
  formatAge,
  formatBytes,
  formatDuration,
  formatGradNorm,
  formatLoss,
  formatMetrics,
  formatParamValue,
  formatPercent,
  formatSci,
  formatWd,
  progressBar,
  sparkline,
} from './format.js';

export interface RunViewProps {
  s: RunSnapshot;
  /** Width of the progress bars in cells. */
  barWidth?: number;
  /** Number of losses in the sparkline. */
  sparkWidth?: number;
  /** Hide the header (the sweep board shows its own). */
  compact?: boolean;
  /** Hide the sweep-trial line (the sweep board's rows already show the parameters). */
  hideSweep?: boolean;
  /**
   * Terminal width in cells: the header splits into two lines instead of wrapping, and the bars and the sparkline
   * shrink so that every line fits (long values are cut, paths in the middle). Unset: no fitting (bars at full size).
   */
  width?: number;
  /**
   * Terminal rows the view may use (keep it below the terminal's height: Ink redraws a frame as tall as the terminal
   * by clearing the screen): warnings and log lines beyond them are left out (oldest first).
   */
  height?: number;
  /**
   * Show the resume command under the final status (default). The Ink subscriber prints it after the view instead,
   * as a plain line the terminal wraps softly (a command Ink wrapped would not paste); a sweep prints its own.
   */
  resumeLine?: boolean;
}

const LABEL = 11;
/** Narrowest progress bar / sparkline the view shrinks to. */
const MIN_BAR = 10;
const MIN_SPARK = 8;

/** The label column's width for a label (as `Label` lays it out). */
function labelWidth(label: string): number {
  return Math.max(LABEL, label.length + 1);
}

function Label({ children }: { children: string }): React.JSX.Element {
  // fixed width, never shrunk when the value next to it wraps
  return (
    <Box width={Math.max(LABEL, children.length + 1)} flexShrink={0}>
      <Text color="gray">{children}</Text>
    </Box>
  );
}

export function StatusLine({ s, resumeLine = true }: { s: RunSnapshot; resumeLine?: boolean }): React.JSX.Element {
  const e = s.end;
  if (e) {
    const loss = e.finalLoss != null ? `, final loss ${formatLoss(e.finalLoss)}` : '';
    if (e.status === 'FINISHED') {
      return <Text color="green" bold>{`✔ finished at step ${e.step} (epoch ${e.epoch})${loss}`}</Text>;
    }
    if (e.status === 'FAILED') {
      return (
        <Box flexDirection="column">
          <Text color="red" bold>{`✘ failed at step ${e.step} (epoch ${e.epoch})${loss}`}</Text>
          {e.error ? <Text color="red" wrap="truncate-end">{`  ${e.error}`}</Text> : null}
          {e.resumeCommand && resumeLine ? <Text>{`  resume with: ${e.resumeCommand}`}</Text> : null}
        </Box>
      );
    }
    return (
      <Box flexDirection="column">
        <Text color="yellow" bold>{`■ stopped at step ${e.step} (epoch ${e.epoch})${loss}`}</Text>
        {e.resumeCommand && resumeLine ? <Text>{`  resume with: ${e.resumeCommand}`}</Text> : null}
      </Box>
    );
  }
  if (s.stopping) {
    return <Text color="yellow">{'stopping… finishing the step and writing a checkpoint (Ctrl-C again: quit now)'}</Text>;
  }
  if (!s.started) return <Text color="gray">{'starting…'}</Text>;
  return <Text color="gray">{'running · Ctrl-C stops gracefully (writes a checkpoint)'}</Text>;
}

/** A value and a path after it: fitted, the path is cut in the middle to keep one line; else the two wrap together. */
function ValueAndPath({ value, path, fitted }: { value: string; path: string; fitted: boolean }): React.JSX.Element {
  if (!fitted) {
    return (
      <Text>
        {value}
        <Text color="gray">{path}</Text>
      </Text>
    );
  }
  return (
    <>
      <Box flexShrink={0}>
        <Text>{value}</Text>
      </Box>
      <Text color="gray" wrap="truncate-middle">
        {path}
      </Text>
    </>
  );
}

/** One header part: text and colour (the header is laid out from these, on one line or two). */
interface HeaderPart {
  text: string;
  color?: string;
  bold?: boolean;
}

function HeaderLine({ parts }: { parts: HeaderPart[] }): React.JSX.Element {
  return (
    <Text wrap="truncate-end">
      {parts.map((p, i) => (
        <Text key={i} color={p.color} bold={p.bold}>
          {p.text}
        </Text>
      ))}
    </Text>
  );
}

const partsLength = (parts: HeaderPart[]): number => parts.reduce((n, p) => n + p.text.length, 0);

/** The header as one line (`[parts]`) or, when that is wider than `width`, two: what the run is, which run it is. */
function headerLayout(s: RunSnapshot, width: number): HeaderPart[][] {
  const title = s.experiment && s.experiment !== s.name ? `${s.experiment}/${s.name}` : s.name;
  const what: HeaderPart[] = [{ text: 'spark ', color: 'cyan', bold: true }, { text: title || '…', bold: true }];
  if (s.encoder) what.push({ text: `  ${s.encoder}` });
  if (s.backend) what.push({ text: `  backend ${s.backend}`, color: 'gray' });
  const which: HeaderPart[] = [];
  if (s.sweep) which.push({ text: `  ${trialLabel(s.sweep.trial, s.sweep.trials)} ${s.sweep.trialName}`, color: 'gray' });
  else if (s.runId) which.push({ text: `  run ${s.runId}`, color: 'gray' });
  if (s.resumed) which.push({ text: `  resumed at step ${s.startStep}`, color: 'magenta' });
  if (partsLength(what) + partsLength(which) <= width) return [[...what.slice(0, 2), ...which, ...what.slice(2)]];
  return [what, which.map((p, i) => (i === 0 ? { ...p, text: p.text.trimStart() } : p))].filter((l) => l.length);
}

/** The lines of the view other than warnings and logs (each of which takes one line while the run goes). */
export function runViewBaseLines(s: RunSnapshot, o: { width?: number; compact?: boolean; hideSweep?: boolean; resumeLine?: boolean } = {}): number {
  let n = 4; // epoch, run, loss, optim
  if (!o.compact) n += headerLayout(s, o.width ?? Infinity).length + (!o.hideSweep && s.sweep ? 1 : 0);
  if (s.memory) n++;
  if (s.lastEpoch) n++;
  n++; // checkpoint
  if (s.reconstruction) n++;
  if (s.metrics) n++;
  if (s.tracking) n++;
  n++; // status
  if (s.end?.error && s.end.status === 'FAILED') n++;
  if (s.end?.resumeCommand && s.end.status !== 'FINISHED' && o.resumeLine !== false) n++;
  return n;
}

export function RunView({ s, barWidth = 30, sparkWidth = 40, compact = false, hideSweep = false, width, height, resumeLine = true }: RunViewProps): React.JSX.Element {
  const W = width ?? Infinity;
  // fitted to a width: long values are cut to one line; unfitted (no width): they wrap
  const fit = (how: 'truncate-end' | 'truncate-middle'): 'wrap' | 'truncate-end' | 'truncate-middle' => (width === undefined ? 'wrap' : how);
  const spe = s.stepsPerEpoch;
  const epochFrac = spe > 0 ? s.epochStep / spe : 0;
  const runFrac = s.totalSteps > 0 ? s.step / s.totalSteps : 0;
  const elapsed = s.startTime != null ? s.elapsedBefore + (s.now - s.startTime) / 1000 : null;
  const losses = s.lossHistory;
  // header: what the run is, then which run; on two lines when one does not fit (it never wraps into the bars)
  const headerLines = headerLayout(s, W);
  // warnings and logs (and the tracking line): one line each while the run goes, so the frame keeps its height;
  // the final frame shows them whole when that fits the height. With a height, only the newest that fit are shown.
  let warnings = s.warnings;
  let logs = s.logs;
  const warningText = (w: (typeof warnings)[number]): string => `⚠ ${w.code}: ${w.message}${w.count > 1 ? ` (×${w.count})` : ''}`;
  const logText = (l: (typeof logs)[number]): string => `${l.level}: ${l.message}`;
  const trackingText = s.tracking ? `${s.tracking.state}${s.tracking.message ? ': ' + s.tracking.message : ''}` : '';
  let wrapNotes = width === undefined || !!s.end;
  if (height !== undefined) {
    const room = Math.max(0, height - runViewBaseLines(s, { width: W, compact, hideSweep, resumeLine }));
    // lines a text takes when wrapped at word boundaries (a little more than length / width)
    const wrapped = (t: string, indent = 0): number => Math.max(1, Math.ceil((t.length + indent) / Math.max(20, W - 8)));
    const whole = (s.tracking ? wrapped(trackingText, LABEL) - 1 : 0) + warnings.reduce((n, w) => n + wrapped(warningText(w)), 0) + logs.reduce((n, l) => n + wrapped(logText(l)), 0);
    wrapNotes = wrapNotes && !!s.end && whole <= room;
    if (!wrapNotes) {
      logs = logs.slice(Math.max(0, logs.length - Math.max(0, room - warnings.length)));
      warnings = warnings.slice(Math.max(0, warnings.length - (room - logs.length)));
    }
  }
  const noteWrap = wrapNotes ? 'wrap' : fit('truncate-end');

  // the bars take what the label and the numbers leave, down to MIN_BAR (then elapsed time goes first)
  const epochLabel = `epoch ${s.epoch}/${s.totalEpochs}`;
  const epochTail = ` ${s.epochStep}/${spe}`;
  const runTail = ` ${s.step}/${s.totalSteps} ${formatPercent(runFrac)}  ETA ${s.etaSec != null ? formatDuration(s.etaSec) : '-:--:--'}`;
  const elapsedText = elapsed != null ? `  elapsed ${formatDuration(elapsed)}` : '';
  const barRoom = (tail: number): number => W - Math.max(labelWidth(epochLabel), LABEL) - tail;
  const showElapsed = elapsedText !== '' && barRoom(runTail.length + elapsedText.length) >= MIN_BAR;
  const bars = Math.max(MIN_BAR, Math.min(barWidth, barRoom(Math.max(epochTail.length, runTail.length + (showElapsed ? elapsedText.length : 0)))));
  const lossText = `${formatLoss(s.loss)}  ema ${formatLoss(s.ema)}  min ${formatLoss(s.minLoss)}  `;
  const spark = Math.min(sparkWidth, W - LABEL - lossText.length);
  return (
    <Box flexDirection="column">
      {!compact && headerLines.map((parts, i) => <HeaderLine key={`h${i}`} parts={parts} />)}
      {!compact && !hideSweep && s.sweep ? (
        <Text color="gray" wrap={fit('truncate-end')}>
          {`sweep ${trialLabel(s.sweep.trial, s.sweep.trials)} (${s.sweep.trialName}) ` +
            Object.entries(s.sweep.params)
              .map(([k, v]) => `${k}=${formatParamValue(v)}`)
              .join(' ')}
        </Text>
      ) : null}
      <Box>
        <Box width={Math.max(labelWidth(epochLabel), LABEL)} flexShrink={0}>
          <Text color="gray">{epochLabel}</Text>
        </Box>
        <Text color="blue">{progressBar(epochFrac, bars)}</Text>
        <Text>{epochTail}</Text>
      </Box>
      <Box>
        <Box width={Math.max(labelWidth(epochLabel), LABEL)} flexShrink={0}>
          <Text color="gray">run</Text>
        </Box>
        <Text color="green">{progressBar(runFrac, bars)}</Text>
        <Text wrap={fit('truncate-end')}>
          {runTail}
          {showElapsed ? <Text color="gray">{elapsedText}</Text> : null}
        </Text>
      </Box>
      <Box>
        <Label>loss</Label>
        <Text wrap={fit('truncate-end')}>
          <Text bold>{formatLoss(s.loss)}</Text>
          {`  ema ${formatLoss(s.ema)}`}
          <Text color="gray">{`  min ${formatLoss(s.minLoss)}  `}</Text>
          {spark >= MIN_SPARK ? <Text color="cyan">{sparkline(losses, spark)}</Text> : null}
        </Text>
      </Box>
      <Box>
        <Label>optim</Label>
        <Text wrap={fit('truncate-end')}>
          {`lr ${s.lr != null ? formatSci(s.lr) : '—'}  wd ${s.wd != null ? formatWd(s.wd) : '—'}  ` +
            `grad-norm ${s.gradNorm != null ? formatGradNorm(s.gradNorm) : '—'}  ` +
            `${s.imgPerSec != null && Number.isFinite(s.imgPerSec) ? s.imgPerSec.toFixed(1) : '—'} img/s`}
        </Text>
      </Box>
      {s.memory || s.batch ? (
        <Box>
          <Label>memory</Label>
          <Text wrap={fit('truncate-end')}>
            {(s.memory ? `${s.memory.numTensors} tensors (${formatBytes(s.memory.numBytes)})  RSS ${formatBytes(s.memory.rssBytes)}  ` : '') +
              (s.batch ? `batch ${s.batch.size} = ${s.batch.accumulate} × ${s.batch.micro}` : '')}
          </Text>
        </Box>
      ) : null}
      {s.lastEpoch ? (
        <Box>
          <Label>last epoch</Label>
          <Text wrap={fit('truncate-end')}>
            {`${s.lastEpoch.epoch}: mean ${formatLoss(s.lastEpoch.meanLoss)}  min ${formatLoss(s.lastEpoch.minLoss)}  ` +
              `${s.lastEpoch.seconds.toFixed(1)} s`}
          </Text>
        </Box>
      ) : null}
      <Box>
        <Label>checkpoint</Label>
        {s.checkpoint ? (
          <ValueAndPath value={`step ${s.checkpoint.step} (epoch ${s.checkpoint.epoch}), ${formatAge((s.now - s.checkpoint.time) / 1000)} ago  `} path={s.checkpoint.path} fitted={width !== undefined} />
        ) : (
          <Text color="gray" wrap={fit('truncate-end')}>
            {s.resumed ? `resumed from the checkpoint at step ${s.startStep}` : 'none yet'}
          </Text>
        )}
      </Box>
      {s.reconstruction ? (
        <Box>
          <Label>recon</Label>
          <ValueAndPath value={`epoch ${s.reconstruction.epoch} loss ${formatLoss(s.reconstruction.loss)}  `} path={s.reconstruction.path} fitted={width !== undefined} />
        </Box>
      ) : null}
      {s.metrics ? (
        <Box>
          <Label>metrics</Label>
          <Text wrap={fit('truncate-end')}>
            {formatMetrics(s.metrics.values)}
            <Text color="gray">{`  (step ${s.metrics.step}, epoch ${s.metrics.epoch})`}</Text>
          </Text>
        </Box>
      ) : null}
      {s.tracking ? (
        <Box>
          <Label>tracking</Label>
          <Text color={s.tracking.state === 'offline' ? 'yellow' : 'green'} wrap={noteWrap}>
            {trackingText}
          </Text>
        </Box>
      ) : null}
      {warnings.map((w, i) => (
        <Text key={`w${i}`} color="yellow" wrap={noteWrap}>
          {warningText(w)}
        </Text>
      ))}
      {logs.map((l, i) => (
        <Text key={`l${i}`} color={l.level === 'error' ? 'red' : 'yellow'} wrap={noteWrap}>
          {logText(l)}
        </Text>
      ))}
      <StatusLine s={s} resumeLine={resumeLine} />
    </Box>
  );
}

/** The terminal's size, updated when it is resized. */
export function useTerminalSize(): { columns: number; rows: number } {
  const { stdout } = useStdout();
  const read = () => ({ columns: stdout.columns || 80, rows: stdout.rows || 24 });
  const [size, setSize] = useState(read);
  useEffect(() => {
    const onResize = () => setSize(read());
    stdout.on('resize', onResize);
    return () => {
      stdout.off('resize', onResize);
    };
  }, [stdout]);
  return size;
}

/** Ctrl-C handling shared by the run view and the sweep board. */
export interface InterruptController {
  /** Called on each Ctrl-C keypress (raw-mode stdin) or SIGINT. */
  interrupt(): void;
}

/** Listen for Ctrl-C on stdin when it supports raw mode (otherwise the terminal sends SIGINT instead). */
export function CtrlC({ controller }: { controller: InterruptController }): null {
  const { isRawModeSupported } = useStdin();
  useInput(
    (input, key) => {
      if (key.ctrl && (input === 'c' || input === '\u0003')) controller.interrupt();
    },
    { isActive: isRawModeSupported === true },
  );
  return null;
}

export function RunApp({ s, controller }: { s: RunSnapshot; controller?: InterruptController }): React.JSX.Element {
  const { columns, rows } = useTerminalSize();
  return (
    <>
      {controller ? <CtrlC controller={controller} /> : null}
      <RunView s={s} width={columns} height={rows - 1} resumeLine={false} />
    </>
  );
}
