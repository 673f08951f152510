// Component tests for the image UI (issue 15), rendered to static HTML with react-dom/server (no
// browser needed; the browser flows are in test/dashboard.test.ts).
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';
import type { WorkerImageList, WorkerImageObject } from '../api/types.ts';
import { byteProgress, bytes, percentOf, shortDigest } from '../format.ts';
import { ImagesTable, cacheUse } from './ImagesPanel.tsx';
import { ProgressBar } from './ProgressBar.tsx';

const GiB = 1024 ** 3;
const D1 = `sha256:${'ab12cd34ef56'.padEnd(64, '0')}`;
const D2 = `sha256:${'9f'.padEnd(64, '1')}`;
const NOW = Date.parse('2025-01-01T01:00:00.000Z');

function image(over: Partial<WorkerImageObject> = {}): WorkerImageObject {
  return { digest: D1, reference: `127.0.0.1:5000/fleet/guest@${D1}`, format: 'fleet-qemu', sizeBytes: Math.round(1.5 * GiB), state: 'ready', progress: null, error: '', inUse: 0, lastUsedAt: '2025-01-01T00:55:00.000Z', ...over };
}

const list = (items: WorkerImageObject[], over: Partial<WorkerImageList> = {}): WorkerImageList => ({ worker: 'mac-1', usedBytes: 12 * GiB, limitBytes: 100 * GiB, items, ...over });

/** The visible text of some markup, whitespace collapsed. */
function text(html: string): string {
  const entities: Record<string, string> = { '&#x27;': "'", '&quot;': '"', '&amp;': '&', '&lt;': '<', '&gt;': '>' };
  return html.replace(/<[^>]+>/g, ' ').replace(/&#x27;|&quot;|&amp;|&lt;|&gt;/g, (e) => entities[e]!).replace(/\s+/g, ' ').trim();
}

/** The markup of the table row for `key` (DataTable marks rows with data-row). */
function row(html: string, key: string): string {
  const start = html.indexOf(`<tr data-row="${key}">`);
  expect(start, `row ${key}`).toBeGreaterThanOrEqual(0);
  return html.slice(start, html.indexOf('</tr>', start));
}

describe('format', () => {
  it('bytes, progress and digests', () => {
    expect(bytes(512)).toBe('512 B');
    expect(bytes(Math.round(3.4 * GiB))).toBe('3.4 GiB');
    expect(byteProgress(Math.round(1.2 * GiB), Math.round(3.4 * GiB))).toBe('1.2 / 3.4 GiB');
    expect(byteProgress(10 * 1024 * 1024, 2 * GiB)).toBe('10 MiB / 2 GiB');
    expect(byteProgress(5 * 1024, 0)).toBe('5 KiB');
    expect(percentOf({ bytesDone: 1, bytesTotal: 4, percent: 25 })).toBe(25);
    expect(percentOf({ bytesDone: 1, bytesTotal: 0, percent: 0 })).toBeNull();
    expect(shortDigest(D1)).toBe('ab12cd34ef56');
    expect(cacheUse(12 * GiB, 100 * GiB)).toBe('12 GiB of 100 GiB (12 %)');
    expect(cacheUse(3 * GiB, 0)).toBe('3 GiB (no limit)');
  });
});

describe('ProgressBar', () => {
  it('a labelled native <progress> with the percent and the bytes', () => {
    const html = renderToStaticMarkup(<ProgressBar progress={{ bytesDone: Math.round(1.2 * GiB), bytesTotal: Math.round(3.4 * GiB), percent: 37 }} label="Pulling image r/x:1" detail="on mac-1" />);
    expect(html).toContain('<progress aria-label="Pulling image r/x:1" max="100" value="37" aria-valuetext="37 % · 1.2 / 3.4 GiB on mac-1"></progress>');
    expect(text(html)).toBe('37 % · 1.2 / 3.4 GiB on mac-1');
    expect(html).toContain('data-percent="37"');
  });

  it('indeterminate while the total is not known', () => {
    const html = renderToStaticMarkup(<ProgressBar progress={{ bytesDone: 5 * 1024 * 1024, bytesTotal: 0, percent: 0 }} label="Pulling" />);
    expect(html).toContain('<progress aria-label="Pulling"></progress>');
    expect(html).not.toContain('value=');
    expect(text(html)).toBe('5 MiB');
  });
});

describe('ImagesTable', () => {
  const items = [
    image({ inUse: 2 }),
    image({ digest: D2, reference: 'ghcr.io/org/macos@sha256:…', format: 'tart', sizeBytes: 40 * GiB, state: 'pulling', progress: { bytesDone: 10 * GiB, bytesTotal: 40 * GiB, percent: 25 }, lastUsedAt: null }),
  ];

  it('one row per image: short digest with a copy button, reference, format, size, state, in use, last used', () => {
    const html = renderToStaticMarkup(<ImagesTable list={list(items)} canDelete={false} onDelete={async () => undefined} now={NOW} />);
    expect(html).toContain('<caption>2 images, 1 pulling; cache 12 GiB of 100 GiB (12 %)</caption>');
    const ready = text(row(html, D1));
    expect(ready).toContain('ab12cd34ef56');
    expect(row(html, D1)).toContain('aria-label="Copy digest ab12cd34ef56"');
    expect(ready).toContain('fleet-qemu');
    expect(ready).toContain('1.5 GiB');
    expect(ready).toContain('ready');
    expect(ready).toContain('2 VMs');
    expect(ready).toContain('5m 0s ago');
    expect(row(html, D1)).toContain(`title="${D1}"`);
    // the pinned reference without the digest the row shows already; the whole one as tooltip
    expect(row(html, D1)).toContain(`<code class="reference" title="127.0.0.1:5000/fleet/guest@${D1}">127.0.0.1:5000/fleet/guest</code>`);
    const pulling = row(html, D2);
    expect(pulling).toContain('<progress aria-label="Pull of 9f1111111111" max="100" value="25"');
    expect(text(pulling)).toContain('25 % · 10 / 40 GiB');
    expect(text(pulling)).toContain('never');
    // read-only: no delete buttons
    expect(html).not.toContain('Delete');
  });

  it('with the write role: a delete per image, unusable with the reason while the image is in use', () => {
    const html = renderToStaticMarkup(<ImagesTable list={list(items)} canDelete onDelete={async () => undefined} now={NOW} />);
    const used = row(html, D1);
    expect(used).toMatch(/<button type="button" class="danger" aria-label="Delete image ab12cd34ef56" aria-disabled="true" title="In use by 2 VMs on mac-1: delete or move those VMs first">Delete<\/button>/);
    const free = row(html, D2);
    expect(free).toMatch(/<button type="button" class="danger" aria-label="Delete image 9f1111111111">Delete<\/button>/);
    expect(free).toContain('Delete image 9f1111111111 from mac-1?');
  });

  it('a failed pull shows its error; an empty cache says so', () => {
    const failed = renderToStaticMarkup(<ImagesTable list={list([image({ state: 'failed', error: 'blob sha256:… does not match its digest' })])} canDelete={false} onDelete={async () => undefined} now={NOW} />);
    expect(text(failed)).toContain('failed blob sha256:… does not match its digest');
    const empty = renderToStaticMarkup(<ImagesTable list={list([], { usedBytes: 0, limitBytes: 0 })} canDelete={false} onDelete={async () => undefined} now={NOW} />);
    expect(empty).toContain('<caption>0 images; cache 0 B (no limit)</caption>');
    expect(text(empty)).toContain("No images in this worker's cache.");
  });
});
