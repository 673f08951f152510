import { useEffect, useRef, useState } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { StatsSample, StatsSeries } from '../api/types.ts';
import { useSession } from '../session.tsx';

const REFRESH_MS = 5000;

interface SeriesDef {
  label: string;
  value: (s: StatsSample) => number | null;
  stroke: string;
  bars?: boolean;
}

function Chart({ title, samples, series, yLabel }: { title: string; samples: StatsSample[]; series: SeriesDef[]; yLabel: string }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data: uPlot.AlignedData = [samples.map((s) => s.t), ...series.map((d) => samples.map(d.value))];
  const key = series.map((s) => s.label).join('|');

  useEffect(() => {
    if (!host.current) return;
    const width = Math.max(320, host.current.clientWidth);
    plot.current = new uPlot(
      {
        width,
        height: 220,
        axes: [{}, { label: yLabel }],
        series: [
          {},
          ...series.map((d) => ({
            label: d.label,
            stroke: d.stroke,
            width: 2,
            spanGaps: false,
            ...(d.bars ? { paths: uPlot.paths.bars!({ size: [0.6, 40] }), fill: d.stroke + '66' } : {}),
          })),
        ],
      },
      data,
      host.current,
    );
    const onResize = () => plot.current?.setSize({ width: Math.max(320, host.current?.clientWidth ?? width), height: 220 });
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      plot.current?.destroy();
      plot.current = null;
    };
  }, [key]); // eslint-disable-line react-hooks/exhaustive-deps

  useEffect(() => {
    plot.current?.setData(data);
  });

  const last = samples[samples.length - 1];
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      <div ref={host} role="img" aria-label={`${title}: ${last ? series.map((d) => `${d.label} ${d.value(last) ?? 'n/a'}`).join(', ') : 'no data yet'}`} />
    </figure>
  );
}

/** What shows instead of the charts while there is nothing to draw: the first load, or no sample yet. */
export function PlotsStatus({ data, error }: { data: StatsSeries | null; error: string | null }) {
  if (data === null && error === null) {
    return (
      <div className="loading plots-loading" role="status" aria-live="polite" aria-busy="true">
        <span className="spinner" aria-hidden="true" /> Loading the controller's time series…
      </div>
    );
  }
  if (data !== null && data.samples.length === 0) {
    return (
      <p className="loading" role="status" aria-live="polite">
        No samples yet: the first arrives within {data.intervalSeconds} s of the controller starting.
      </p>
    );
  }
  return null;
}

export function PlotsPage() {
  const { api } = useSession();
  const [data, setData] = useState<StatsSeries | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const load = () => api.get<StatsSeries>('/v1/stats/timeseries').then(setData, (err: unknown) => setError(String(err)));
    void load();
    const t = setInterval(load, REFRESH_MS);
    return () => clearInterval(t);
  }, [api]);
  return (
    <section aria-labelledby="plots-title">
      <h1 id="plots-title">Plots</h1>
      <p className="muted">The controller samples itself every {data?.intervalSeconds ?? 5} s and keeps the last hour in memory (it restarts empty; use Prometheus at /metrics for history).</p>
      {error && <p role="alert" className="error">{error}</p>}
      <PlotsStatus data={data} error={error} />
      {data && (
        <div className="charts">
          <Chart
            title="Slots used"
            yLabel="slots"
            samples={data.samples}
            series={[
              { label: 'VM slots used', value: (s) => s.slotsUsed, stroke: '#2563eb' },
              { label: 'VM slots total', value: (s) => s.slotsTotal, stroke: '#94a3b8' },
              { label: 'macOS slots used', value: (s) => s.macosSlotsUsed, stroke: '#9333ea' },
            ]}
          />
          <Chart
            title="VM starts and failures per interval"
            yLabel="VMs"
            samples={data.samples}
            series={[
              { label: 'starts', value: (s) => s.starts, stroke: '#16a34a', bars: true },
              { label: 'failures', value: (s) => s.failures, stroke: '#dc2626', bars: true },
            ]}
          />
          <Chart title="Scheduling latency (create → placed, mean)" yLabel="ms" samples={data.samples} series={[{ label: 'latency ms', value: (s) => s.schedulingLatencyMs, stroke: '#ea580c' }]} />
          <Chart
            title="Running and pending VMs"
            yLabel="VMs"
            samples={data.samples}
            series={[
              { label: 'running', value: (s) => s.running, stroke: '#16a34a' },
              { label: 'pending', value: (s) => s.pending, stroke: '#d97706' },
            ]}
          />
        </div>
      )}
    </section>
  );
}
