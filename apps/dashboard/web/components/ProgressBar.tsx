// A transfer's progress (an image pull, a cache's use): a native <progress> (announced by screen
// readers with its label) and the numbers beside it. Without a known total it is indeterminate.
import { byteProgress, percentOf } from '../format.ts';

export interface Transfer {
  bytesDone: number;
  bytesTotal: number;
  percent: number;
}

export function ProgressBar({ progress, label, detail }: { progress: Transfer; label: string; detail?: string }) {
  const pct = percentOf(progress);
  const text = `${pct === null ? '' : `${pct} % · `}${byteProgress(progress.bytesDone, progress.bytesTotal)}${detail ? ` ${detail}` : ''}`;
  return (
    <span className="progress" data-percent={pct ?? undefined}>
      {pct === null ? <progress aria-label={label} /> : <progress aria-label={label} max={100} value={pct} aria-valuetext={text} />}
      <span className="progress-text">{text}</span>
    </span>
  );
}
