// Debian's Chromium driven by playwright-core (no browser download), with the
// flags that work on a closed network as root, and screenshots saved as test
// artifacts under test/artifacts/ (git-ignored).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO_ROOT } from './fleet-processes.ts';

export const CHROMIUM = process.env.FLEET_CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS_DIR = path.join(REPO_ROOT, 'test/artifacts');

export function chromiumMissing(): string {
  return existsSync(CHROMIUM) ? '' : `${CHROMIUM} not found (install Debian's chromium: scripts/install-system-deps.sh)`;
}

export async function launchChromium(): Promise<Browser> {
  // playwright gives each launch a fresh, empty profile directory of its own.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** The same build the README's setup runs (skipped when the sources are unchanged). */
export function ensureDashboardBuilt(): void {
  execFileSync('bash', [path.join(REPO_ROOT, 'apps/dashboard/build.sh')], { stdio: 'inherit' });
}

export async function screenshot(page: Page, dir: string, name: string): Promise<string> {
  const folder = path.join(ARTIFACTS_DIR, dir);
  await mkdir(folder, { recursive: true });
  const file = path.join(folder, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// The checks run inside the page; they are strings because this package is
// typechecked without the DOM library.

/** Form controls without an accessible name (label element, aria-label or aria-labelledby). */
export function unlabelledControls(page: Page): Promise<string[]> {
  return page.evaluate<string[]>(`(() => {
    const out = [];
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (el.type === 'hidden' || el.closest('[hidden]') || el.closest('.xterm')) continue;
      const labelled = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
      if (!labelled) out.push(el.outerHTML.slice(0, 120));
    }
    return out;
  })()`);
}

/** Tables without a caption or with column headers lacking scope. */
export function badTables(page: Page): Promise<string[]> {
  return page.evaluate<string[]>(`Array.from(document.querySelectorAll('table'))
    .filter((t) => !t.querySelector('caption') || Array.from(t.querySelectorAll('thead th')).some((th) => th.getAttribute('scope') !== 'col'))
    .map((t) => t.outerHTML.slice(0, 120))`);
}

/** Presses Tab until `predicate` holds for the focused element; returns how many presses it took (or -1). */
export async function tabUntil(page: Page, predicate: string, max = 60): Promise<number> {
  for (let i = 1; i <= max; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate(`(() => { const el = document.activeElement; return !!el && (${predicate}); })()`)) return i;
  }
  return -1;
}
