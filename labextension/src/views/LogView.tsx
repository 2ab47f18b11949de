/**
 * A build's log: streamed live (server-sent events) while the build runs, else read once.
 * Follows the end of the log until the user scrolls up; "Follow" brings it back.
 */
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';
import { ApiError } from '../api';
import { useUI } from './context';
import { ErrorMessage } from './common';

export interface LogStep {
  name: string;
  /** Seconds, once the step has ended. */
  seconds?: number;
}

/**
 * The pipeline's step markers (builder/log.py): `-- <step>` when a step starts, `== <step>: <s> s`
 * when it ends; `BUILD FAILED: <reason>` names the failure.
 */
export function logSummary(lines: readonly string[]): { steps: LogStep[]; failure?: string } {
  const steps: LogStep[] = [];
  let failure: string | undefined;
  for (const line of lines) {
    const start = /^-- (\S.*)$/.exec(line);
    const end = /^== (.+): ([0-9.]+) s$/.exec(line);
    if (start) {
      steps.push({ name: start[1] });
    } else if (end) {
      const step = [...steps].reverse().find((s) => s.name === end[1] && s.seconds === undefined);
      if (step) step.seconds = Number(end[2]);
      else steps.push({ name: end[1], seconds: Number(end[2]) });
    } else if (line.startsWith('BUILD FAILED: ') && failure === undefined) {
      failure = line.slice('BUILD FAILED: '.length);
    }
  }
  return { steps, failure };
}

/** Within this many pixels of the bottom counts as "at the end" (sub-pixel rounding, zoom). */
const STICK_SLACK_PX = 8;

export function LogView(props: { buildId: number; live: boolean; onEnd?(): void; hideFailure?: boolean }) {
  const { client } = useUI();
  const [lines, setLines] = useState<string[]>([]);
  const [state, setState] = useState<'loading' | 'streaming' | 'done'>('loading');
  const [error, setError] = useState<Error | undefined>();
  const [follow, setFollow] = useState(true);
  const box = useRef<HTMLPreElement>(null);
  const live = useRef(props.live); // the mode is chosen once per build: a stream runs until its end event
  const onEnd = useRef(props.onEnd);
  onEnd.current = props.onEnd;

  useEffect(() => {
    setLines([]);
    setError(undefined);
    if (!live.current) {
      const controller = new AbortController();
      client.buildLog(props.buildId, controller.signal).then(
        (text) => { setLines(text.replace(/\n$/, '').split('\n')); setState('done'); },
        (err) => { if (!controller.signal.aborted) { setError(err); setState('done'); } }
      );
      return () => controller.abort();
    }
    const source = client.buildLogEvents(props.buildId);
    setState('streaming');
    // Lines arrive in bursts; batch them into one render per animation frame.
    let pending: string[] = [];
    let frame = 0;
    const flush = () => {
      frame = 0;
      const batch = pending;
      pending = [];
      setLines((old) => old.concat(batch));
    };
    source.onmessage = (event) => {
      pending.push(event.data);
      if (!frame) frame = requestAnimationFrame(flush);
    };
    source.addEventListener('end', () => {
      source.close();
      if (frame) cancelAnimationFrame(frame);
      flush();
      setState('done');
      onEnd.current?.();
    });
    source.onerror = () => {
      // EventSource reconnects by itself (resuming at Last-Event-ID); only a closed source is final.
      if (source.readyState === EventSource.CLOSED) {
        setError(new ApiError(0, 'the live log stream was closed by the server; reload the page to retry'));
        setState('done');
      }
    };
    return () => {
      source.close();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [client, props.buildId]);

  useLayoutEffect(() => {
    const el = box.current;
    if (el && follow) el.scrollTop = el.scrollHeight;
  }, [lines, follow]);

  const summary = useMemo(() => logSummary(lines), [lines]);
  return (
    <div className="cs-log">
      {summary.failure && !props.hideFailure ? (
        <div className="cs-alert cs-alert-danger" data-testid="log-failure"><strong>Failed:</strong> {summary.failure}</div>
      ) : null}
      {summary.steps.length ? (
        <ol className="cs-steps" aria-label="Build steps">
          {summary.steps.map((step, i) => (
            <li key={i} className={step.seconds === undefined ? 'cs-step-running' : 'cs-step-done'}>
              {step.name}{' '}
              <span className="cs-muted">
                {step.seconds !== undefined ? `${step.seconds.toFixed(step.seconds < 10 ? 2 : 1)} s`
                  : state === 'streaming' ? 'running…' : 'did not finish'}
              </span>
            </li>
          ))}
        </ol>
      ) : null}
      <div className="cs-log-toolbar">
        <span role="status" aria-live="polite" className="cs-muted cs-small" data-testid="log-state">
          {state === 'streaming' ? 'Streaming live…' : state === 'loading' ? 'Loading log…' : `${lines.length} lines`}
        </span>
        {!follow ? (
          <button type="button" className="cs-btn cs-btn-sm cs-btn-outline" onClick={() => setFollow(true)}>
            Follow the log
          </button>
        ) : null}
        <a className="cs-small" href={client.artifactUrl(props.buildId, 'logs')}>Raw log</a>
      </div>
      <ErrorMessage error={error} context="Log" />
      <pre
        ref={box}
        className="cs-log-body"
        tabIndex={0}
        aria-label="Build log"
        data-testid="build-log"
        onScroll={(event) => {
          const el = event.currentTarget;
          const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - STICK_SLACK_PX;
          if (atEnd !== follow) setFollow(atEnd);
        }}
      >
        {lines.join('\n')}
      </pre>
    </div>
  );
}
