/**
 * The sweep board: one row per trial (the parameters that vary, status, current or final loss, progress) and the
 * running trial's run view below. Plain mode prints prefixed run lines and one line per status change, and a
 * summary table on close.
 */
import React from 'react';
import { Box, Text, render, type Instance } from 'ink';
import type { RunEvent, RunSubscriber } from '../train/events.js';
import { CtrlC, RunView, runViewBaseLines, useTerminalSize } from './RunView.js';
import { Interrupter } from './interrupt.js';
import { PlainLogger } from './plain.js';
import { useInkFor } from './tty.js';
import { formatLoss, formatParamValue, progressBar } from './format.js';
import { trialLabel } from './trial-label.js';
import {
  applyEvent,
  initialRunState,
  realClock,
  takeSnapshot,
  Throttle,
  type Clock,
  type RunSnapshot,
  type RunState,
} from './store.js';

export type TrialStatus = 'pending' | 'running' | 'finished' | 'failed' | 'skipped' | 'killed';

export interface TrialInfo {
  /** Final (or latest) loss to show. */
  loss?: number | null;
  /** Short note, e.g. the failure message or why the trial was skipped. */
  message?: string;
  runId?: string;
}

export interface SweepTrial {
  index: number;
  name: string;
  params: Record<string, unknown>;
}

export interface SweepConsoleOptions {
  trials: SweepTrial[];
  plain?: boolean;
  onInterrupt?: () => void;
  /** Output stream (default process.stdout); its isTTY (and CI, TERM) decide Ink vs plain unless `plain`. */
  stream?: NodeJS.WriteStream;
  stdin?: NodeJS.ReadStream;
  /** Plain mode: a step line every N steps (default: each run's output.log_every). */
  logEvery?: number;
  // test hooks
  /** Force the renderer ('auto': Ink on an interactive terminal). */
  mode?: 'auto' | 'ink' | 'plain';
  clock?: Clock;
  intervalMs?: number;
  handleSigint?: boolean;
  forceExit?: () => void;
  debug?: boolean;
  patchConsole?: boolean;
}

export interface SweepConsole {
  /** The subscriber to attach to trial `index`'s run (its close() leaves the board up). */
  trialSubscriber(index: number): RunSubscriber;
  setStatus(index: number, status: TrialStatus, info?: TrialInfo): void;
  /** Render the final board and unmount (Ink) / print the summary (plain). */
  close(): Promise<void>;
}

export interface TrialRow {
  index: number;
  name: string;
  params: Record<string, unknown>;
  status: TrialStatus;
  loss: number | null;
  step: number;
  totalSteps: number;
  message: string;
  runId: string;
}

export interface SweepSnapshot {
  now: number;
  rows: readonly TrialRow[];
  /** Parameter names whose values differ between trials (all of them when none differ). */
  varying: readonly string[];
  /** The trial whose run view is shown (latest one started and still running), or null. */
  detail: RunSnapshot | null;
  detailIndex: number | null;
  stopping: boolean;
  closed: boolean;
}

/** Names of the parameters that take more than one value across the trials (all names when none vary). */
export function varyingParams(trials: ReadonlyArray<{ params: Record<string, unknown> }>): string[] {
  const keys: string[] = [];
  for (const t of trials) for (const k of Object.keys(t.params)) if (!keys.includes(k)) keys.push(k);
  const varying = keys.filter((k) => new Set(trials.map((t) => JSON.stringify(t.params[k]))).size > 1);
  return varying.length ? varying : keys;
}

function statusColor(s: TrialStatus): string {
  switch (s) {
    case 'running':
      return 'cyan';
    case 'finished':
      return 'green';
    case 'failed':
      return 'red';
    case 'killed':
      return 'yellow';
    default:
      return 'gray';
  }
}

function statusGlyph(s: TrialStatus): string {
  return { pending: '·', running: '▶', finished: '✔', failed: '✘', skipped: '–', killed: '■' }[s];
}

/** Plain-text table rows (header first) of the board; used by the Ink view and the plain summary. */
export function boardTable(rows: readonly TrialRow[], varying: readonly string[]): string[][] {
  const head = ['#', ...varying, 'status', 'loss', 'steps'];
  const body = rows.map((r) => [
    String(r.index + 1), // 1-based for people (the folder trials/000 is trial 1)
    ...varying.map((k) => (k in r.params ? formatParamValue(r.params[k]) : '')),
    r.status,
    formatLoss(r.loss),
    r.totalSteps > 0 ? `${r.step}/${r.totalSteps}` : r.step > 0 ? String(r.step) : '',
  ]);
  return [head, ...body];
}

function columnWidths(table: string[][]): number[] {
  const w: number[] = [];
  for (const row of table) row.forEach((c, i) => (w[i] = Math.max(w[i] ?? 0, c.length)));
  return w;
}

/** Lines the board keeps for the running trial's view (its base lines; warnings and logs share what is left). */
const DETAIL_CHROME = 2; // the blank line and `trial N` above the run view

export function SweepView({ s, barWidth = 16, width, height }: { s: SweepSnapshot; barWidth?: number; width?: number; height?: number }): React.JSX.Element {
  const W = width ?? Infinity;
  const table = boardTable(s.rows, s.varying);
  const widths = columnWidths(table);
  const counts = new Map<TrialStatus, number>();
  for (const r of s.rows) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
  const summary = (['finished', 'running', 'failed', 'killed', 'skipped', 'pending'] as TrialStatus[])
    .filter((k) => counts.get(k))
    .map((k) => `${counts.get(k)} ${k}`)
    .join(' · ');
  const pad = (row: string[]): string[] => row.map((c, i) => c.padEnd(widths[i]!));
  const nStatus = 1 + s.varying.length; // column index of status
  // the bar takes what the cells leave, from barWidth down to 6 (then none)
  const cellsWidth = 2 + widths.reduce((n, w) => n + w, 0) + 2 * widths.length;
  const bar = Math.min(barWidth, W - cellsWidth);
  // rows: the board's chrome, the detail view's base lines, then as many trials as fit around the running one
  const stopLine = s.stopping && !s.closed ? 1 : 0;
  const detailBase = s.detail ? DETAIL_CHROME + runViewBaseLines(s.detail, { width: W, hideSweep: true, resumeLine: false }) : 0;
  let shown = s.rows.map((_, i) => i);
  let hiddenNote = '';
  if (height !== undefined) {
    const room = Math.max(3, height - 2 - stopLine - detailBase);
    if (s.rows.length > room) {
      const fit = room - 1; // one line says how many are not shown
      const focus = Math.max(0, s.rows.findIndex((r) => r.index === s.detailIndex));
      const first = Math.min(Math.max(0, focus - Math.floor(fit / 2)), s.rows.length - fit);
      shown = shown.slice(first, first + fit);
      const before = first;
      const after = s.rows.length - first - fit;
      hiddenNote = `  … ${before + after} more trials (${before} above, ${after} below)`;
    }
  }
  const detailHeight = height !== undefined ? Math.max(0, height - 2 - stopLine - shown.length - (hiddenNote ? 1 : 0) - DETAIL_CHROME) : undefined;
  return (
    <Box flexDirection="column">
      <Text wrap="truncate-end">
        <Text bold color="cyan">{'spark sweep '}</Text>
        <Text>{`${s.rows.length} trials  `}</Text>
        <Text color="gray">{summary}</Text>
      </Text>
      <Text color="gray" wrap="truncate-end">
        {'  ' + pad(table[0]!).join('  ')}
      </Text>
      {shown.map((i) => {
        const r = s.rows[i]!;
        const cells = pad(table[i + 1]!);
        const frac = r.totalSteps > 0 ? r.step / r.totalSteps : r.status === 'finished' ? 1 : 0;
        return (
          <Text key={r.index} wrap="truncate-end">
            <Text color={statusColor(r.status)}>{statusGlyph(r.status) + ' '}</Text>
            <Text>{cells.slice(0, nStatus).join('  ') + '  '}</Text>
            <Text color={statusColor(r.status)}>{cells[nStatus]}</Text>
            <Text>{'  ' + cells.slice(nStatus + 1).join('  ') + '  '}</Text>
            {bar >= 6 ? <Text color={statusColor(r.status)}>{progressBar(frac, bar)}</Text> : null}
            {r.message ? <Text color={r.status === 'failed' ? 'red' : 'gray'}>{'  ' + r.message}</Text> : null}
          </Text>
        );
      })}
      {hiddenNote ? <Text color="gray">{hiddenNote}</Text> : null}
      {s.detail && s.detailIndex != null ? (
        <Box flexDirection="column" marginTop={1}>
          <Text bold>{trialLabel(s.detailIndex, s.rows.length)}</Text>
          <RunView s={s.detail} hideSweep resumeLine={false} {...(width !== undefined ? { width } : {})} {...(detailHeight !== undefined ? { height: detailHeight } : {})} />
        </Box>
      ) : null}
      {stopLine ? <Text color="yellow">{'stopping the sweep after the current trial step… (Ctrl-C again to quit now)'}</Text> : null}
    </Box>
  );
}

function SweepApp({ s, controller }: { s: SweepSnapshot; controller?: Interrupter }): React.JSX.Element {
  const { columns, rows } = useTerminalSize();
  return (
    <>
      {controller ? <CtrlC controller={controller} /> : null}
      <SweepView s={s} width={columns} height={rows - 1} />
    </>
  );
}

interface Board {
  rows: TrialRow[];
  runs: Map<number, RunState>;
  active: number | null;
  stopping: boolean;
  closed: boolean;
}

function row(board: Board, index: number): TrialRow {
  const r = board.rows.find((x) => x.index === index);
  if (!r) throw new Error(`sweep console: unknown trial index ${index}`);
  return r;
}

/** A trial's status (and what the runner knows of it) onto its board row. */
function applyTrialStatus(board: Board, index: number, status: TrialStatus, info: TrialInfo | undefined): TrialRow {
  const r = row(board, index);
  r.status = status;
  if (info?.loss != null) r.loss = info.loss;
  if (info?.message) r.message = info.message;
  if (info?.runId) r.runId = info.runId;
  return r;
}

function applyTrialEvent(board: Board, index: number, e: RunEvent): void {
  const r = row(board, index);
  let st = board.runs.get(index);
  if (!st) board.runs.set(index, (st = initialRunState()));
  applyEvent(st, e);
  if (e.type === 'run-start') {
    r.status = 'running';
    r.totalSteps = e.totalSteps;
    r.step = e.startStep;
    r.runId = e.runId;
    board.active = index;
  } else if (e.type === 'step') {
    r.step = e.step;
    r.loss = e.loss;
  } else if (e.type === 'run-end') {
    r.step = Math.max(r.step, e.step);
    r.status = e.status === 'FINISHED' ? 'finished' : e.status === 'FAILED' ? 'failed' : 'killed';
    if (e.finalLoss != null) r.loss = e.finalLoss;
    if (e.error) r.message = e.error;
  }
}

function pickActive(board: Board): number | null {
  if (board.active != null && row(board, board.active).status === 'running') return board.active;
  const running = board.rows.filter((r) => r.status === 'running');
  if (running.length) return running[running.length - 1]!.index;
  return board.active; // keep showing the last trial's final frame
}

export function createSweepConsole(opts: SweepConsoleOptions): SweepConsole {
  const board: Board = {
    rows: opts.trials.map((t) => ({
      index: t.index,
      name: t.name,
      params: t.params,
      status: 'pending' as TrialStatus,
      loss: null,
      step: 0,
      totalSteps: 0,
      message: '',
      runId: '',
    })),
    runs: new Map(),
    active: null,
    stopping: false,
    closed: false,
  };
  const varying = varyingParams(opts.trials);
  const stream = opts.stream ?? process.stdout;
  const ink = opts.mode === 'ink' ? true : opts.mode === 'plain' ? false : useInkFor({ plain: opts.plain, stream });
  return ink ? inkSweep(board, varying, opts, stream) : plainSweep(board, varying, opts, stream);
}

function plainSweep(board: Board, varying: string[], opts: SweepConsoleOptions, stream: { write(s: string): unknown }): SweepConsole {
  const total = board.rows.length;
  const paramText = (r: TrialRow): string =>
    varying
      .filter((k) => k in r.params)
      .map((k) => `${k}=${formatParamValue(r.params[k])}`)
      .join(' ');
  const interrupter = opts.onInterrupt
    ? new Interrupter({
        onInterrupt: opts.onInterrupt,
        handleSigint: opts.handleSigint,
        forceExit: opts.forceExit,
        onFirst: () => stream.write('interrupt: stopping the sweep after this step (Ctrl-C again to quit now)\n'),
      })
    : null;
  let closed = false;
  return {
    trialSubscriber(index: number): RunSubscriber {
      row(board, index);
      // the sweep prints how to resume it once, at its end
      const logger = new PlainLogger({ stream, logEvery: opts.logEvery, prefix: `[${trialLabel(index, total)}] `, resumeHint: false });
      return {
        onEvent(e: RunEvent): void {
          applyTrialEvent(board, index, e);
          logger.onEvent(e);
        },
        async close(): Promise<void> {
          /* the sweep console prints its summary on its own close() */
        },
      };
    },
    setStatus(index: number, status: TrialStatus, info?: TrialInfo): void {
      const r = applyTrialStatus(board, index, status, info);
      const p = paramText(r);
      const loss = r.loss != null && status !== 'pending' && status !== 'running' ? ` loss ${formatLoss(r.loss)}` : '';
      const msg = info?.message ? `: ${info.message}` : '';
      stream.write(`[sweep] ${trialLabel(index, total)} ${r.name}${p ? ` (${p})` : ''} ${status}${loss}${msg}\n`);
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      interrupter?.dispose();
      const table = boardTable(board.rows, varying);
      const widths = columnWidths(table);
      stream.write('[sweep] summary\n');
      for (const t of table) stream.write('  ' + t.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n');
    },
  };
}

function inkSweep(board: Board, varying: string[], opts: SweepConsoleOptions, stream: NodeJS.WriteStream): SweepConsole {
  const clock = opts.clock ?? realClock;
  const snap = (): SweepSnapshot => {
    const now = clock.now();
    const detailIndex = pickActive(board);
    const st = detailIndex != null ? board.runs.get(detailIndex) : undefined;
    return {
      now,
      rows: board.rows.map((r) => ({ ...r })),
      varying,
      detail: st ? takeSnapshot(st, now) : null,
      detailIndex: st ? detailIndex : null,
      stopping: board.stopping,
      closed: board.closed,
    };
  };
  let instance: Instance | null = null;
  const publish = (): void => {
    instance?.rerender(<SweepApp s={snap()} controller={interrupter} />);
  };
  const throttle = new Throttle(publish, opts.intervalMs ?? 125, clock);
  let finished = false;
  const interrupter = new Interrupter({
    onInterrupt: opts.onInterrupt,
    handleSigint: opts.handleSigint,
    forceExit: opts.forceExit,
    onFirst: () => {
      board.stopping = true;
      for (const st of board.runs.values()) if (!st.end) st.stopping = true;
      publish();
    },
    cleanup: () => finish(),
  });
  // Ink is mounted at the first trial event, not before: a trial's run-start comes after the compute backend is
  // initialised, and native TensorFlow writes its start-up lines straight to fd 2, which would otherwise leave a
  // stale copy of the first frame on screen.
  let exited: Promise<unknown> = Promise.resolve();
  let heartbeat: ReturnType<typeof setInterval> | null = null;
  function mount(): void {
    if (instance || finished) return;
    instance = render(<SweepApp s={snap()} controller={interrupter} />, {
      stdout: stream,
      stdin: opts.stdin ?? process.stdin,
      exitOnCtrlC: false,
      patchConsole: opts.patchConsole ?? true,
      maxFps: 10,
      debug: opts.debug ?? false,
    });
    exited = instance.waitUntilExit().catch(() => undefined);
    heartbeat = setInterval(() => throttle.poke(), 1000);
    heartbeat.unref();
  }

  function finish(): void {
    if (finished) return;
    mount(); // a board that never saw a trial event still shows its final state
    finished = true;
    board.closed = true;
    if (heartbeat) clearInterval(heartbeat);
    throttle.stop();
    publish();
    instance?.unmount();
  }

  return {
    trialSubscriber(index: number): RunSubscriber {
      row(board, index);
      return {
        onEvent(e: RunEvent): void {
          if (finished) return;
          mount();
          applyTrialEvent(board, index, e);
          if (e.type === 'run-start' && board.stopping) board.runs.get(index)!.stopping = true;
          if (e.type === 'run-start' || e.type === 'run-end') throttle.flush(true);
          else throttle.poke();
        },
        async close(): Promise<void> {
          /* the board stays up until the sweep console closes */
        },
      };
    },
    setStatus(index: number, status: TrialStatus, info?: TrialInfo): void {
      applyTrialStatus(board, index, status, info);
      if (status === 'running') board.active = index;
      if (!finished) throttle.flush(true);
    },
    async close(): Promise<void> {
      finish();
      await exited;
      interrupter.dispose();
    },
  };
}
