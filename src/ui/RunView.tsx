/**
 * The Ink view of one run. `RunView` is a pure function of a `RunSnapshot`; the throttled subscriber re-renders
 * `RunApp` with a new snapshot (Ink's synchronous `rerender`, so the final frame is on screen before unmount).
 * `RunApp` also listens to the keyboard (Ctrl-C → graceful stop, twice → force).
 */
import React from 'react';
import { Box, Text, useInput, useStdin } from 'ink';
import type { RunSnapshot } from './store.js';
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
}

const LABEL = 11;

function Label({ children }: { children: string }): React.JSX.Element {
  // fixed width, never shrunk when the value next to it wraps
  return (
    <Box width={Math.max(LABEL, children.length + 1)} flexShrink={0}>
      <Text color="gray">{children}</Text>
    </Box>
  );
}

export function StatusLine({ s }: { s: RunSnapshot }): React.JSX.Element {
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
          {e.error ? <Text color="red">{`  ${e.error}`}</Text> : null}
          {e.resumeCommand ? <Text>{`  resume with: ${e.resumeCommand}`}</Text> : null}
        </Box>
      );
    }
    return (
      <Box flexDirection="column">
        <Text color="yellow" bold>{`■ stopped at step ${e.step} (epoch ${e.epoch})${loss}`}</Text>
        {e.resumeCommand ? <Text>{`  resume with: ${e.resumeCommand}`}</Text> : null}
      </Box>
    );
  }
  if (s.stopping) {
    return <Text color="yellow">{'stopping… finishing the step and writing a checkpoint (Ctrl-C again to quit now)'}</Text>;
  }
  if (!s.started) return <Text color="gray">{'starting…'}</Text>;
  return <Text color="gray">{'running · Ctrl-C stops gracefully (writes a checkpoint)'}</Text>;
}

export function RunView({ s, barWidth = 30, sparkWidth = 40, compact = false, hideSweep = false }: RunViewProps): React.JSX.Element {
  const spe = s.stepsPerEpoch;
  const epochFrac = spe > 0 ? s.epochStep / spe : 0;
  const runFrac = s.totalSteps > 0 ? s.step / s.totalSteps : 0;
  const elapsed = s.startTime != null ? s.elapsedBefore + (s.now - s.startTime) / 1000 : null;
  const title = s.experiment && s.experiment !== s.name ? `${s.experiment}/${s.name}` : s.name;
  const losses = s.lossHistory;
  return (
    <Box flexDirection="column">
      {!compact && (
        <Box>
          <Text bold color="cyan">{'spark '}</Text>
          <Text bold>{title || '…'}</Text>
          {s.sweep ? (
            <Text color="gray">{`  trial ${s.sweep.trial} ${s.sweep.trialName}`}</Text>
          ) : s.runId ? (
            <Text color="gray">{`  run ${s.runId}`}</Text>
          ) : null}
          {s.encoder ? <Text>{`  ${s.encoder}`}</Text> : null}
          {s.backend ? <Text color="gray">{`  backend ${s.backend}`}</Text> : null}
          {s.resumed ? <Text color="magenta">{`  resumed at step ${s.startStep}`}</Text> : null}
        </Box>
      )}
      {!compact && !hideSweep && s.sweep ? (
        <Text color="gray">
          {`sweep trial ${s.sweep.trial} (${s.sweep.trialName}) ` +
            Object.entries(s.sweep.params)
              .map(([k, v]) => `${k}=${formatParamValue(v)}`)
              .join(' ')}
        </Text>
      ) : null}
      <Box>
        <Label>{`epoch ${s.epoch}/${s.totalEpochs}`}</Label>
        <Text color="blue">{progressBar(epochFrac, barWidth)}</Text>
        <Text>{` ${s.epochStep}/${spe}`}</Text>
      </Box>
      <Box>
        <Label>run</Label>
        <Text color="green">{progressBar(runFrac, barWidth)}</Text>
        <Text>{` ${s.step}/${s.totalSteps} ${formatPercent(runFrac)}`}</Text>
        <Text>{`  ETA ${s.etaSec != null ? formatDuration(s.etaSec) : '-:--:--'}`}</Text>
        {elapsed != null ? <Text color="gray">{`  elapsed ${formatDuration(elapsed)}`}</Text> : null}
      </Box>
      <Box>
        <Label>loss</Label>
        <Text bold>{formatLoss(s.loss)}</Text>
        <Text>{`  ema ${formatLoss(s.ema)}`}</Text>
        <Text color="gray">{`  min ${formatLoss(s.minLoss)}  `}</Text>
        <Text color="cyan">{sparkline(losses, sparkWidth)}</Text>
      </Box>
      <Box>
        <Label>optim</Label>
        <Text>
          {`lr ${s.lr != null ? formatSci(s.lr) : '—'}  wd ${s.wd != null ? formatWd(s.wd) : '—'}  ` +
            `grad-norm ${s.gradNorm != null ? formatGradNorm(s.gradNorm) : '—'}  ` +
            `${s.imgPerSec != null && Number.isFinite(s.imgPerSec) ? s.imgPerSec.toFixed(1) : '—'} img/s`}
        </Text>
      </Box>
      {s.memory || s.batch ? (
        <Box>
          <Label>memory</Label>
          <Text>
            {(s.memory ? `${s.memory.numTensors} tensors (${formatBytes(s.memory.numBytes)})  RSS ${formatBytes(s.memory.rssBytes)}  ` : '') +
              (s.batch ? `batch ${s.batch.size} = ${s.batch.accumulate} × ${s.batch.micro}` : '')}
          </Text>
        </Box>
      ) : null}
      {s.lastEpoch ? (
        <Box>
          <Label>last epoch</Label>
          <Text>
            {`${s.lastEpoch.epoch}: mean ${formatLoss(s.lastEpoch.meanLoss)}  min ${formatLoss(s.lastEpoch.minLoss)}  ` +
              `${s.lastEpoch.seconds.toFixed(1)} s`}
          </Text>
        </Box>
      ) : null}
      <Box>
        <Label>checkpoint</Label>
        {s.checkpoint ? (
          <Text>
            {`step ${s.checkpoint.step} (epoch ${s.checkpoint.epoch}), ${formatAge((s.now - s.checkpoint.time) / 1000)} ago  `}
            <Text color="gray">{s.checkpoint.path}</Text>
          </Text>
        ) : (
          <Text color="gray">{s.resumed ? `resumed from the checkpoint at step ${s.startStep}` : 'none yet'}</Text>
        )}
      </Box>
      {s.reconstruction ? (
        <Box>
          <Label>recon</Label>
          <Text>
            {`epoch ${s.reconstruction.epoch} loss ${formatLoss(s.reconstruction.loss)}  `}
            <Text color="gray">{s.reconstruction.path}</Text>
          </Text>
        </Box>
      ) : null}
      {s.metrics ? (
        <Box>
          <Label>metrics</Label>
          <Text>
            {formatMetrics(s.metrics.values)}
            <Text color="gray">{`  (step ${s.metrics.step}, epoch ${s.metrics.epoch})`}</Text>
          </Text>
        </Box>
      ) : null}
      {s.tracking ? (
        <Box>
          <Label>tracking</Label>
          <Text color={s.tracking.state === 'offline' ? 'yellow' : 'green'}>
            {`${s.tracking.state}${s.tracking.message ? ': ' + s.tracking.message : ''}`}
          </Text>
        </Box>
      ) : null}
      {s.warnings.map((w, i) => (
        <Text key={`w${i}`} color="yellow">
          {`⚠ ${w.code}: ${w.message}${w.count > 1 ? ` (×${w.count})` : ''}`}
        </Text>
      ))}
      {s.logs.map((l, i) => (
        <Text key={`l${i}`} color={l.level === 'error' ? 'red' : 'yellow'}>
          {`${l.level}: ${l.message}`}
        </Text>
      ))}
      <StatusLine s={s} />
    </Box>
  );
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
  return (
    <>
      {controller ? <CtrlC controller={controller} /> : null}
      <RunView s={s} />
    </>
  );
}
