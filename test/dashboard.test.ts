// The operators' dashboard in a real browser (Debian Chromium via playwright-core)
// against a real controller process (serving the production build at /) and a
// real worker process: log in, see the worker, create a VM from the form and watch
// it reach running with an IP without reloading, the terminal and the VM's filter
// counters, drain the worker, a read-only user who sees no destructive buttons (and
// whom the API refuses), revoking that user's token ends their session. Screenshots of every page go to
// test/artifacts/dashboard/ (git-ignored). Accessibility basics are asserted on
// each page: labelled form controls, captioned tables with scoped headers,
// keyboard reachability (Tab) and Enter submitting forms.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { execFile, execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Readable } from 'node:stream';
import { runCli } from '../apps/cli/src/testing/run-cli.ts';
import { enrollAndRunWorker, REPO_ROOT, removeDir, startControllerProcess, tempDir, waitUntil, type ControllerProcess, type RunningProcess } from './support/fleet-processes.ts';
import { badTables, chromiumMissing, ensureDashboardBuilt, launchChromium, screenshot, tabUntil, unlabelledControls } from './support/browser.ts';
import { createQemuLab, qemuMissing, type QemuLab } from './support/qemu-worker.ts';

const why = chromiumMissing();
if (why) console.warn(`\n!!!!!!!! SKIPPING test/dashboard.test.ts: ${why}. The dashboard is NOT tested in a browser on this machine. !!!!!!!!\n`);
// Real VMs (QEMU under TCG, in a network namespace) when this machine can run them;
// otherwise the synthetic driver, and the terminal step only checks its stated status.
const noQemu = process.env.FLEET_DASHBOARD_SYNTHETIC ? 'FLEET_DASHBOARD_SYNTHETIC is set' : qemuMissing();
if (!why && noQemu) {
  console.warn(`\n!!!!!!!! test/dashboard.test.ts: ${noQemu}; using the SYNTHETIC driver: the browser terminal into a real VM is NOT tested. !!!!!!!!\n`);
}
const REAL_VMS = !noQemu;

const SHOTS = 'dashboard';
const execFileAsync = promisify(execFile);
// expect.poll's default (1 s) is too short for a page update on two busy shared cores.
const eventually = <T>(fn: () => T | Promise<T>, opts: { timeout?: number; interval?: number } = {}) => expect.poll(fn, { timeout: 10_000, interval: 100, ...opts });
const OPS_PASSWORD = 'correct-horse-battery';

async function expectAccessible(page: Page): Promise<void> {
  expect(await unlabelledControls(page), 'form controls without a label').toEqual([]);
  expect(await badTables(page), 'tables without caption / scoped headers').toEqual([]);
}

describe.skipIf(why !== '')('dashboard in Chromium', () => {
  let controllerDir = '';
  let controller: ControllerProcess;
  let worker: RunningProcess;
  let lab: QemuLab | undefined;
  let workerDir = '';
  let browser: Browser;
  let admin: BrowserContext;
  let page: Page;
  let viewerToken = '';
  const requested = new Set<string>();

  beforeAll(async () => {
    ensureDashboardBuilt();
    controllerDir = await tempDir('dashboard');
    workerDir = await tempDir('dash-w') // short: the VMs' socket paths must fit in 107 bytes;
    if (REAL_VMS) {
      lab = createQemuLab();
      controller = await startControllerProcess({ dataDir: controllerDir, extraArgs: ['--grpc-listen', `${lab.controllerAddress}:0`, '--name', lab.controllerAddress] });
      const { token } = await controller.api.createBootstrapToken();
      const enroll = lab.run(lab.enrollArgs(controller.grpcAddress, token, 'mac-1', workerDir));
      if ((await enroll.exited) !== 0) throw new Error(`enroll failed:\n${enroll.output()}`);
      worker = lab.run(lab.workerArgs(workerDir, ['--labels', 'pool=ci', '--cpus', '2', '--memory-mib', '2048', '--vm-slots', '4', '--macos-slots', '2']));
      await waitUntil(async () => (await controller.api.worker('mac-1'))?.status === 'online', 90_000, 'qemu worker online');
    } else {
      controller = await startControllerProcess({ dataDir: controllerDir });
      worker = await enrollAndRunWorker(controller, { name: 'mac-1', dataDir: workerDir, labels: 'pool=ci', vmSlots: 4, macosSlots: 2, cpus: 8, memoryMib: 16384, speed: 0.2 });
    }
    await controller.api.ok('POST', '/v1/accounts', { username: 'ops', password: OPS_PASSWORD, roles: ['admin'] });
    viewerToken = (await controller.api.ok<{ token: string }>('POST', '/v1/tokens', { name: 'viewer', roles: ['read'] })).token;
    browser = await launchChromium();
    admin = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    page = await admin.newPage();
    page.on('request', (r) => requested.add(r.url()));
  });

  afterAll(async () => {
    await browser?.close();
    await worker?.kill();
    await controller?.kill();
    lab?.destroy(workerDir);
    if (controllerDir) await removeDir(controllerDir);
    if (workerDir) await removeDir(workerDir);
  }, 60_000);

  it('serves the built app at / and answers deep links with it (SPA fallback), API 404s stay JSON', async () => {
    const root = await fetch(controller.apiUrl + '/');
    expect(root.status).toBe(200);
    expect(await root.text()).toMatch(/<div id="root">/);
    const deep = await fetch(controller.apiUrl + '/vms/some-vm');
    expect(deep.status).toBe(200);
    expect(deep.headers.get('content-type')).toMatch(/text\/html/);
    const api404 = await fetch(controller.apiUrl + '/v1/no-such-route');
    expect(api404.status).toBe(404);
    expect(await api404.json()).toMatchObject({ error: { code: 'not_found' } });
  });

  it('logs in with an account (keyboard: Tab order, Enter submits) and shows the live overview', async () => {
    await page.goto(controller.apiUrl + '/');
    await expectAccessible(page);
    await screenshot(page, SHOTS, '01-login');
    // A wrong password is refused with a message.
    await page.getByLabel('Username').fill('ops');
    await page.getByLabel('Password').fill('wrong-password');
    await page.getByLabel('Password').press('Enter');
    await eventually(() => page.getByRole('alert').textContent()).toMatch(/wrong username or password/);
    // Tab from the username reaches the password, then the Sign in button.
    await page.getByLabel('Username').focus();
    await page.keyboard.press('Tab');
    expect(await page.evaluate<string | null>("document.activeElement?.getAttribute('name')")).toBe('password');
    await page.keyboard.press('Tab');
    expect(await page.evaluate<string | null>('document.activeElement?.textContent')).toBe('Sign in');
    await page.getByLabel('Password').fill(OPS_PASSWORD);
    await page.getByLabel('Password').press('Enter');
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    const online = page.getByRole('group', { name: 'Workers online' });
    await eventually(() => online.textContent(), { timeout: 10_000 }).toMatch(/Workers online1of 1/);
    await eventually(() => page.getByRole('group', { name: 'VM slots used' }).textContent()).toMatch(/0 \/ 4/);
    await eventually(() => page.getByRole('group', { name: 'macOS slots used' }).textContent()).toMatch(/0 \/ 2/);
    expect(await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Overview' }).getAttribute('aria-current')).toBe('page');
    await screenshot(page, SHOTS, '02-overview');
  });

  it('the Controllers panel shows the one (SQLite) controller as the alive leader, and the header names it', async () => {
    const health = (await (await fetch(controller.apiUrl + '/v1/health')).json()) as { controller?: { id: string; name: string; role: string } };
    expect(health.controller).toMatchObject({ role: 'leader' });
    const { id, name } = health.controller!;
    const panel = page.getByRole('region', { name: 'Controllers' });
    const table = panel.getByRole('table');
    await eventually(() => table.locator('tbody tr').count()).toBe(1);
    const row = table.locator(`tr[data-row="${id}"]`);
    await eventually(() => row.textContent()).toMatch(/alive/);
    const text = (await row.textContent()) ?? '';
    expect(text).toContain(name);
    expect(text).toMatch(/serving this page/);
    expect(await row.locator('.badge.role-leader').textContent()).toBe('leader');
    expect(text).toContain(controller.apiUrl);
    expect(text).toContain(controller.grpcAddress);
    expect(text).toMatch(/\d+s ago/);
    // The worker's gRPC stream is held by this controller.
    await eventually(() => row.locator('td.num').textContent()).toBe('1');
    expect(await table.locator('caption').textContent()).toMatch(/^1 controller, 1 alive/);
    // The header says which controller served the page and that it leads.
    expect(await page.locator('header .served').textContent()).toBe(`controller ${name} leader`);
    await expectAccessible(page);
    await screenshot(page, SHOTS, '02b-controllers');
    // The CLI reads the same routes of this real controller.
    const cliEnv = { FLEET_URL: controller.apiUrl, FLEET_TOKEN: controller.adminToken, FLEET_CONFIG: '/nonexistent/fleet-config.json' };
    const list = await runCli(['controller', 'list', '--json'], { env: cliEnv });
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toMatchObject({ controllers: [{ id, name, role: 'leader', alive: true, apiUrl: controller.apiUrl, grpcAddress: controller.grpcAddress }] });
    const status = await runCli(['controller', 'status'], { env: { ...cliEnv, FLEET_TOKEN: undefined } });
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^Controller:\\s+${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(leader\\)$`, 'm'));
  });

  it('shows the worker in the workers table with its capacity', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Workers' }).click();
    const row = page.locator('tr[data-row="mac-1"]');
    await row.waitFor();
    await eventually(() => row.textContent()).toMatch(/online/);
    expect(await row.textContent()).toMatch(/pool=ci/);
    expect(await row.textContent()).toMatch(/0 \/ 4/);
    expect(await row.textContent()).toMatch(/expires in 36[45]d/); // a fresh 365-day certificate
    await expectAccessible(page);
    await screenshot(page, SHOTS, '03-workers');
  });

  it("the worker's page shows its image cache (issue 15)", async () => {
    await page.locator('tr[data-row="mac-1"]').getByRole('link', { name: 'mac-1' }).click();
    await page.getByRole('heading', { name: /mac-1/ }).waitFor();
    const images = page.getByRole('region', { name: 'Images' });
    // The worker reports its (empty) cache; the table says how much of it is used.
    await eventually(() => images.locator('caption').textContent(), { timeout: 15_000 }).toMatch(/^\d+ images?.*; cache .*B/);
    expect(await images.getByRole('columnheader').allTextContents()).toEqual(expect.arrayContaining([expect.stringMatching(/^Digest/), expect.stringMatching(/^Reference/), expect.stringMatching(/^State/), expect.stringMatching(/^In use/)]));
    await expectAccessible(page);
    await screenshot(page, SHOTS, '03b-worker-images');
    await page.getByRole('link', { name: '← Workers' }).click();
    await page.locator('tr[data-row="mac-1"]').waitFor();
  });

  it('enrollment page creates a bootstrap token and shows the exact enroll command with a copy button', async () => {
    await page.getByRole('link', { name: 'Enroll a worker' }).click();
    await page.getByLabel('Valid for (hours)').fill('2');
    await page.getByRole('button', { name: 'Create bootstrap token' }).click();
    const command = await page.getByLabel('Enroll command').textContent();
    expect(command).toMatch(new RegExp(`^fleet-worker enroll --controller ${controller.grpcAddress.replace(/\./g, '\\.')} --token \\S+ && fleet-worker run$`));
    await page.getByRole('button', { name: 'Copy command' }).click();
    await eventually(() => page.locator('.copy [role=status]').textContent()).toMatch(/Copied|Copy failed/);
    await expectAccessible(page);
    await screenshot(page, SHOTS, '04-enroll');
  });

  it('creates a VM from the form (API validation mirrored) and watches it reach running with an IP without reloading', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'VMs' }).click();
    await page.getByText('No VMs yet.').waitFor(); // an empty fleet says so (no endless "Loading")
    await page.getByRole('link', { name: 'Create VM' }).click();
    await page.getByRole('heading', { name: 'Create a VM' }).waitFor();
    await expectAccessible(page);
    // Invalid input is refused in the browser with the API schema's own rule.
    await page.getByLabel('Name').fill('Bad_Name');
    await page.getByLabel('Memory (MiB)').fill('64');
    await page.getByLabel('Network: also allow (optional)').fill('10.0.0.0/8, nope');
    await page.getByLabel('Name').press('Enter');
    await eventually(() => page.locator('#vm-name-error').textContent()).toMatch(/lower-case letters, digits and dashes/);
    expect(await page.getByLabel('Name').getAttribute('aria-invalid')).toBe('true');
    expect(await page.locator('#vm-memoryMib-error').textContent()).toMatch(/128/);
    expect(await page.locator('#vm-networkAllow-error').textContent()).toMatch(/IPv4 CIDR/);
    expect(await page.evaluate<string | null>('document.activeElement?.id')).toBe('vm-name'); // focus moved to the first problem
    await screenshot(page, SHOTS, '05-create-vm-invalid');
    // Fix it; Enter in a field submits.
    await page.evaluate('window.noReload = true'); // a reload would lose it
    await page.getByLabel('Name').fill('web-1');
    await page.getByLabel('Image').fill('fleet-guest');
    await page.getByLabel('Memory (MiB)').fill('256');
    await page.getByLabel('Network: also allow (optional)').fill('10.0.0.0/8');
    await page.getByLabel('Labels (optional)').fill('team=ci');
    await page.getByLabel('Labels (optional)').press('Enter');
    await page.getByRole('heading', { name: /web-1/ }).waitFor();
    const ip = page.locator('dd[data-field="IP"]');
    try {
      await eventually(() => ip.textContent(), { timeout: 120_000, interval: 250 }).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    } catch (err) {
      const vm = await controller.api.vm('web-1');
      const logFile = /see (\S+qemu\.log)/.exec(String(vm?.reason))?.[1];
      const log = logFile ? await readFile(logFile, 'utf8').catch(() => '(unreadable)') : '';
      throw new Error(`web-1 never showed an IP: ${JSON.stringify(vm)}\n${log ? `${logFile}:\n${log.slice(-3000)}\n` : ''}worker output:\n${worker.output().slice(-4000)}`, { cause: err });
    }
    expect(await page.locator('#vm-title .badge').textContent()).toBe('running');
    expect(await page.evaluate<boolean | undefined>('window.noReload')).toBe(true); // same document: no reload
    const vm = await controller.api.vm('web-1');
    expect(vm).toMatchObject({ state: 'running', labels: { team: 'ci' }, memoryMib: 256, image: 'fleet-guest', network: { allow: ['10.0.0.0/8'] } });
    expect(await ip.textContent()).toBe(vm.ip);
    // The events timeline shows the VM's history.
    await eventually(() => page.getByRole('list', { name: /Event timeline/ }).textContent()).toMatch(/→ running/);
    await expectAccessible(page);
    await screenshot(page, SHOTS, '06-vm-detail');
  });

  it('opens a browser terminal into the VM: the output of a command appears and resizing reaches the guest', async () => {
    const status = page.locator('[data-terminal-status]');
    await eventually(() => status.getAttribute('data-terminal-status')).not.toBe('checking');
    expect(await status.getAttribute('data-terminal-status'), await status.textContent() ?? '').toBe('idle');
    await page.getByRole('button', { name: 'Open terminal' }).click();
    if (!REAL_VMS) {
      // A synthetic VM has no guest: the session must end with a stated reason, not hang.
      await eventually(() => status.getAttribute('data-terminal-status'), { timeout: 30_000 }).toBe('closed');
      expect(await status.textContent()).toMatch(/Session (error|ended|closed)|Connection/);
      await screenshot(page, SHOTS, '07-terminal');
      return;
    }
    await eventually(() => status.getAttribute('data-terminal-status'), { timeout: 90_000 }).toBe('open');
    const screen = page.locator('.terminal-host .xterm-rows');
    await page.keyboard.type('echo dash-$((6*7))\n');
    await eventually(() => screen.textContent(), { timeout: 20_000 }).toMatch(/dash-42/);
    // Resize: a smaller window refits the terminal; the guest's PTY learns the new size.
    const host = page.locator('.terminal-host');
    const before = await host.getAttribute('data-cols');
    await page.setViewportSize({ width: 900, height: 900 });
    await eventually(() => host.getAttribute('data-cols')).not.toBe(before);
    const [rows, cols] = [await host.getAttribute('data-rows'), await host.getAttribute('data-cols')];
    await page.keyboard.type('stty size\n');
    await eventually(() => screen.textContent(), { timeout: 20_000 }).toContain(`${rows} ${cols}`);
    // The session's SSH traffic went through the VM's packet filter: its counters show on the page.
    const passed = page.locator('table.counters tr[data-verdict="pass"] td');
    await eventually(async () => (await passed.allTextContents()).map(Number), { timeout: 30_000 }).toEqual([expect.any(Number), expect.any(Number)]);
    const [fromVm, toVm] = (await passed.allTextContents()).map(Number);
    expect(fromVm).toBeGreaterThan(0);
    expect(toVm).toBeGreaterThan(0);
    await screenshot(page, SHOTS, '07-terminal');
    await page.setViewportSize({ width: 1360, height: 900 });
  });

  it('the Console tab shows the VM\'s screen through noVNC; keys typed on it reach the guest (issue 19)', async () => {
    await page.getByRole('tab', { name: 'Console' }).click();
    const status = page.locator('[data-console-status]');
    const statusText = async () => `${await status.getAttribute('data-console-status')}: ${await status.textContent()}`;
    if (!REAL_VMS) {
      // The synthetic driver has no console: the tab must say why, not hang.
      console.warn(`test/dashboard.test.ts: SKIPPING the console screen and typing checks: the synthetic driver has no VNC console (${noQemu}).`);
      await eventually(() => status.getAttribute('data-console-status'), { timeout: 30_000 }).toBe('disconnected');
      expect(await status.textContent()).toMatch(/Disconnected: \S/);
      expect(await status.textContent(), 'a driver without a console is not retried').not.toMatch(/Retrying/);
      await screenshot(page, SHOTS, '07b-console');
      await page.getByRole('tab', { name: 'Terminal' }).click();
      return;
    }
    try {
      await eventually(() => status.getAttribute('data-console-status'), { timeout: 90_000, interval: 250 }).toBe('connected');
    } catch (err) {
      throw new Error(`the console never connected; its status: ${await statusText()}`, { cause: err });
    }
    // The screen is drawn: noVNC's canvas holds more than one colour (the VGA text console's text).
    const pixels = () =>
      page.evaluate<{ width: number; height: number; lit: number; colours: number }>(`(() => {
        const canvases = Array.from(document.querySelectorAll('.console-screen canvas'));
        const c = canvases.sort((a, b) => b.width * b.height - a.width * a.height)[0];
        if (!c || c.width === 0) return { width: 0, height: 0, lit: 0, colours: 0 };
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Map();
        for (let i = 0; i < d.length; i += 4) { const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2]; seen.set(k, (seen.get(k) || 0) + 1); }
        const background = Math.max(...seen.values());
        return { width: c.width, height: c.height, lit: d.length / 4 - background, colours: seen.size };
      })()`);
    await eventually(async () => (await pixels()).lit, { timeout: 60_000, interval: 500 }).toBeGreaterThan(200);
    const drawn = await pixels();
    expect(drawn.width).toBeGreaterThanOrEqual(640);
    expect(drawn.colours).toBeGreaterThan(1);
    await expectAccessible(page);
    // Keyboard: focus the screen and type into tty1's root shell; ">" is Shift+Period, as on a real keyboard.
    await page.locator('.console-screen canvas').first().click();
    await page.keyboard.type('echo console-typed ');
    await page.keyboard.press('Shift+Period');
    await page.keyboard.type(' /tmp/typed');
    await page.keyboard.press('Enter');
    const cliEnv = { FLEET_URL: controller.apiUrl, FLEET_TOKEN: controller.adminToken, FLEET_CONFIG: '/nonexistent/fleet-config.json' };
    // `fleet exec` as a process: runCli's in-memory stdout is not the stream a session needs.
    let last = '';
    const typed = async (file = '/tmp/typed') => {
      try {
        return (await execFileAsync(process.execPath, [path.join(REPO_ROOT, 'apps/cli/bin/fleet.js'), 'exec', '-n', 'web-1', '--', 'cat', file], { env: { ...process.env, ...cliEnv }, timeout: 60_000 })).stdout.trim();
      } catch (err) {
        last = String((err as { stderr?: string }).stderr ?? err).trim();
        return '';
      }
    };
    try {
      await eventually(() => typed(), { timeout: 30_000, interval: 1000 }).toBe('console-typed');
    } catch (err) {
      const shot = await screenshot(page, SHOTS, '07b-console-typing-failed');
      throw new Error(`the keys typed on the console did not reach the guest (status ${await statusText()}; the last fleet exec: ${last}; see ${shot})`, { cause: err });
    }
    await screenshot(page, SHOTS, '07b-console');
    // A network blip: every TCP connection to the controller's API port is reset (`ss -K`, as root;
    // going offline in Chromium leaves open WebSockets alone). The page's streams and the console
    // reconnect by themselves.
    const api = new URL(controller.apiUrl);
    execFileSync('ss', ['-K', 'dst', api.hostname, 'dport', '=', api.port], { stdio: 'ignore' });
    await eventually(() => status.getAttribute('data-console-status'), { timeout: 20_000, interval: 50 }).toBe('disconnected');
    expect(await status.textContent()).toMatch(/Disconnected: .*(lost|closed).*Retrying in \d+ s/);
    await eventually(() => status.getAttribute('data-console-status'), { timeout: 60_000, interval: 250 }).toBe('connected');
    await eventually(async () => (await pixels()).lit, { timeout: 30_000, interval: 500 }).toBeGreaterThan(200); // redrawn
    // Manual: Disconnect, then Reconnect.
    await page.getByRole('button', { name: 'Disconnect' }).click();
    await eventually(() => status.getAttribute('data-console-status')).toBe('disconnected');
    expect(await status.textContent()).not.toMatch(/Retrying/);
    await page.getByRole('button', { name: 'Reconnect' }).click();
    await eventually(() => status.getAttribute('data-console-status'), { timeout: 60_000, interval: 250 }).toBe('connected');
    // "Type into the VM": the text box typed as key presses, Shift where a US keyboard needs it.
    await page.getByLabel('Clipboard / text to type').fill('echo Typed-By-Button >/tmp/typed2\n');
    await page.getByRole('button', { name: 'Type into the VM' }).click();
    await eventually(() => typed('/tmp/typed2'), { timeout: 30_000, interval: 1000 }).toBe('Typed-By-Button');
    await page.getByRole('tab', { name: 'Terminal' }).click();
  });

  it('VMs table: live, filterable, sortable from the keyboard', async () => {
    // Pending forever (no worker has 64 GiB): shows up live and is cheap on this machine.
    await controller.api.createVm({ name: 'api-2', image: 'fleet-guest', memoryMib: 65536 });
    // bad-3 fails on the worker (an image it does not have): its error shows in the table.
    await controller.api.createVm({ name: 'bad-3', image: REAL_VMS ? 'no-such-image' : 'synthetic:fail-create', cpus: 1, memoryMib: 128 });
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'VMs' }).click();
    await page.locator('tr[data-row="api-2"]').waitFor(); // created elsewhere, appears without reload
    await eventually(() => page.locator('tr[data-row="bad-3"]').textContent(), { timeout: 30_000 }).toMatch(/failed.*(not found|synthetic failure)/);
    const names = () => page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-row')));
    expect(await names()).toEqual(['api-2', 'bad-3', 'web-1']);
    // Keyboard: Tab reaches the Name sort button; Enter sorts descending.
    await page.getByLabel('Search').focus();
    expect(await tabUntil(page, "el.classList.contains('sort') && el.textContent.startsWith('Name')")).toBeGreaterThan(0);
    await page.keyboard.press('Enter'); // name is the initial sort: Enter flips it
    expect(await page.locator('th', { hasText: 'Name' }).getAttribute('aria-sort')).toBe('descending');
    expect(await names()).toEqual(['web-1', 'bad-3', 'api-2']);
    await page.getByLabel('Search').fill('team=ci');
    await eventually(names).toEqual(['web-1']);
    await page.getByLabel('Search').fill('');
    await page.getByLabel('State').selectOption('failed');
    await eventually(names).toEqual(['bad-3']);
    expect(page.url()).toMatch(/state=failed/); // filters live in the URL
    await page.getByLabel('State').selectOption('');
    await expectAccessible(page);
    await screenshot(page, SHOTS, '08-vms');
  });

  it('events page pages and filters fleet-wide events by VM, worker, actor and kind', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Events' }).click();
    await page.getByRole('heading', { name: 'Events and audit log' }).waitFor();
    await page.locator('tbody tr').first().waitFor();
    await page.getByLabel('VM').fill('web-1');
    await page.getByLabel('Kind').fill('vm.state');
    await page.getByLabel('Kind').press('Enter');
    await eventually(() => page.url()).toMatch(/vm=web-1/);
    await eventually(async () => {
      const rows = await page.locator('tbody tr').allTextContents();
      return rows.length > 0 && rows.every((r) => r.includes('web-1') && r.includes('vm.state'));
    }).toBe(true);
    await page.getByLabel('VM').fill('');
    await page.getByLabel('Kind').fill('');
    await page.getByLabel('Actor').fill('token:admin');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await eventually(async () => (await page.locator('tbody tr').allTextContents()).join('\n')).toMatch(/account ops/);
    await expectAccessible(page);
    await screenshot(page, SHOTS, '09-events');
    // Paging: Older shows the next (older) page, Newer comes back.
    await page.goto(controller.apiUrl + '/events?limit=3');
    const ids = () => page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.getAttribute('data-row'))));
    await eventually(async () => (await ids()).length).toBe(3);
    const first = await ids();
    await page.getByRole('button', { name: 'Older →' }).click();
    await eventually(async () => (await ids())[0]).toBeLessThan(Math.min(...first));
    const second = await ids();
    expect(second).toHaveLength(3);
    expect(second).toEqual([...second].sort((a, b) => b - a)); // newest first
    await page.getByRole('button', { name: '← Newer' }).click();
    await eventually(ids).toEqual(first);
  });

  it('plots page draws the controller time series', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Plots' }).click();
    await eventually(() => page.locator('figure.chart canvas').count(), { timeout: 10_000 }).toBe(4);
    const series = await controller.api.ok<{ samples: { slotsTotal: number }[] }>('GET', '/v1/stats/timeseries');
    expect(series.samples.at(-1)?.slotsTotal).toBe(4);
    await screenshot(page, SHOTS, '10-plots');
  });

  it('drains the worker after a confirmation and the overview shows it draining', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Workers' }).click();
    const dialog = page.getByRole('dialog', { name: 'Drain worker mac-1?' });
    // Keyboard: Tab reaches the row's Drain button, Enter opens the dialog, Escape cancels it.
    await page.locator('tr[data-row="mac-1"]').waitFor();
    expect(await tabUntil(page, "el.getAttribute('aria-label') === 'Drain mac-1'")).toBeGreaterThan(0);
    await page.keyboard.press('Enter');
    await dialog.waitFor();
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    expect((await controller.api.worker('mac-1')).paused).toBe(false);
    await page.getByRole('button', { name: 'Drain mac-1' }).click();
    await dialog.waitFor();
    expect(await page.evaluate<string | null>('document.activeElement?.textContent')).toBe('Cancel'); // safe default
    await screenshot(page, SHOTS, '11-drain-confirm');
    await dialog.getByRole('button', { name: 'Drain' }).click();
    await eventually(() => page.locator('tr[data-row="mac-1"]').textContent()).toMatch(/draining/);
    expect((await controller.api.worker('mac-1')).paused).toBe(true);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Overview' }).click();
    await eventually(() => page.getByRole('group', { name: 'Workers draining' }).textContent()).toMatch(/draining1/);
    // api-2 (64 GiB) cannot be placed: the pending queue, its oldest wait and the reason show.
    expect(await page.getByRole('group', { name: 'Pending VMs' }).textContent()).toMatch(/Pending VMs1oldest waits \d+/);
    expect(await page.getByText('Oldest pending VM:').textContent()).toMatch(/api-2 — \S/);
    expect(await page.getByRole('group', { name: 'VMs running' }).textContent()).toBe('VMs running1');
    expect(await page.getByRole('group', { name: 'VMs failed' }).textContent()).toBe('VMs failed1');
    const failures = await page.locator('ul.failures li').allTextContents();
    expect(failures.length).toBeGreaterThan(0);
    for (const f of failures) expect(f).toMatch(/bad-3/); // worker-reported events are named too
    await screenshot(page, SHOTS, '12-overview-draining');
  });

  it('a read-only token sees no destructive buttons, the API refuses it, and revoking it ends its session', async () => {
    const viewerContext = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    const viewer = await viewerContext.newPage();
    await viewer.goto(controller.apiUrl + '/workers');
    await viewer.getByLabel('API token', { exact: true }).fill(viewerToken);
    await viewer.getByLabel('API token', { exact: true }).press('Enter');
    await viewer.locator('tr[data-row="mac-1"]').waitFor();
    expect(await viewer.getByRole('button', { name: /Drain|Resume|Delete/ }).count()).toBe(0);
    await viewer.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'VMs' }).click();
    await viewer.locator('tr[data-row="web-1"]').waitFor();
    expect(await viewer.getByRole('link', { name: 'Create VM' }).count()).toBe(0);
    await viewer.locator('tr[data-row="web-1"]').getByRole('link').click();
    await viewer.getByRole('heading', { name: /web-1/ }).waitFor();
    expect(await viewer.getByRole('button', { name: /Delete|Stop/ }).count()).toBe(0);
    // No console for the read role (issue 19): the tab says why.
    await viewer.getByRole('tab', { name: 'Console' }).click();
    expect(await viewer.locator('[data-console-status="forbidden"]').textContent()).toMatch(/needs the connect role.*no read-only view/);
    // The API refuses the same action from this browser session.
    const status = await viewer.evaluate(async (token) => (await fetch('/v1/workers/mac-1/resume', { method: 'POST', headers: { authorization: `Bearer ${token}` } })).status, viewerToken);
    expect(status).toBe(403);
    await screenshot(viewer, SHOTS, '13-read-only-vm');

    // The admin revokes the viewer's token from the tokens page.
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tokens & accounts' }).click();
    await page.locator('tr[data-row="viewer"]').waitFor();
    await expectAccessible(page);
    await screenshot(page, SHOTS, '14-tokens-accounts');
    await page.getByRole('button', { name: 'Revoke viewer' }).click();
    await page.getByRole('dialog', { name: 'Revoke token viewer?' }).getByRole('button', { name: 'Revoke token' }).click();
    await eventually(() => page.locator('tr[data-row="viewer"]').count()).toBe(0);
    // The viewer's open dashboard ends its session by itself.
    await viewer.getByRole('heading', { name: 'Sign in with an account' }).waitFor({ timeout: 10_000 });
    expect(await viewer.getByRole('alert').textContent()).toMatch(/Session ended: token "viewer" was revoked/);
    await screenshot(viewer, SHOTS, '15-session-ended');
    await viewerContext.close();
  });
  it('works offline: every request the pages made went to the controller itself', () => {
    const origin = new URL(controller.apiUrl).origin;
    const foreign = [...requested].filter((u) => !u.startsWith(origin + '/') && !u.startsWith('data:') && !u.startsWith('blob:'));
    expect(requested.size).toBeGreaterThan(10);
    expect(foreign).toEqual([]);
  });

  it('accounts API: login yields a session token with the account roles; logout and account deletion revoke sessions', async () => {
    const api = controller.api;
    await api.ok('POST', '/v1/accounts', { username: 'reader', password: 'reader-password', roles: ['read'] });
    expect((await api.request('POST', '/v1/accounts', { username: 'reader', password: 'another-password', roles: ['read'] })).status).toBe(409);
    expect((await api.request('POST', '/v1/accounts', { username: 'Bad Name', password: 'short', roles: [] })).status).toBe(400);
    const anon = api.withToken(null);
    expect((await anon.request('POST', '/v1/login', { username: 'reader', password: 'nope' })).status).toBe(401);
    expect((await anon.request('POST', '/v1/login', { username: 'nobody', password: 'nope' })).status).toBe(401);
    const login = await anon.ok<{ token: string; name: string; roles: string[]; expiresAt: string }>('POST', '/v1/login', { username: 'reader', password: 'reader-password' });
    expect(login.roles).toEqual(['read']);
    expect(login.name).toMatch(/^login-reader-[0-9a-f]{8}$/);
    expect(new Date(login.expiresAt).getTime()).toBeGreaterThan(Date.now() + 11 * 3600_000);
    const reader = api.withToken(login.token);
    expect((await reader.request('GET', '/v1/vms')).status).toBe(200);
    expect((await reader.request('POST', '/v1/vms', { name: 'nope', image: 'x' })).status).toBe(403);
    expect((await reader.request('GET', '/v1/accounts')).status).toBe(403);
    expect((await reader.request('POST', '/v1/logout')).status).toBe(204);
    expect((await reader.request('GET', '/v1/vms')).status).toBe(401);
    // Disabling the account revokes its open sessions and refuses logins until enabled.
    const before = api.withToken((await anon.ok<{ token: string }>('POST', '/v1/login', { username: 'reader', password: 'reader-password' })).token);
    expect((await api.request('POST', '/v1/accounts/reader/disable')).status).toBe(200);
    expect((await before.request('GET', '/v1/whoami')).status).toBe(401);
    const refused = await anon.request<{ error: { message: string } }>('POST', '/v1/login', { username: 'reader', password: 'reader-password' });
    expect(refused.status).toBe(401);
    expect(refused.body.error.message).toMatch(/disabled/);
    expect((await api.request('POST', '/v1/accounts/reader/enable')).status).toBe(200);
    // Deleting the account revokes its open sessions.
    const again = api.withToken((await anon.ok<{ token: string }>('POST', '/v1/login', { username: 'reader', password: 'reader-password' })).token);
    expect((await again.request('GET', '/v1/whoami')).status).toBe(200);
    expect((await api.request('DELETE', '/v1/accounts/reader')).status).toBe(204);
    expect((await again.request('GET', '/v1/whoami')).status).toBe(401);
    expect((await anon.request('POST', '/v1/login', { username: 'reader', password: 'reader-password' })).status).toBe(401);
  });

  it('`fleet account create --password-stdin` makes an account that can sign in', async () => {
    const global = ['--url', controller.apiUrl, '--token', controller.adminToken];
    const created = await runCli([...global, 'account', 'create', 'cli-user', '--role', 'write', '--password-stdin'], { stdin: Readable.from(['cli-password-1\n']) });
    expect(created, created.stderr).toMatchObject({ code: 0 });
    expect(created.stdout).toMatch(/account "cli-user" created \(roles: write\)/);
    const short = await runCli([...global, 'account', 'create', 'cli-user2', '--role', 'read', '--password-stdin'], { stdin: Readable.from(['short\n']) });
    expect(short.code).not.toBe(0);
    expect(short.stderr).toMatch(/at least 8 characters/);
    const listed = await runCli([...global, 'account', 'list']);
    expect(listed.stdout).toMatch(/cli-user\s+write/);
    const login = await controller.api.withToken(null).ok<{ roles: string[] }>('POST', '/v1/login', { username: 'cli-user', password: 'cli-password-1' });
    expect(login.roles).toEqual(['write']);
    expect((await runCli([...global, 'account', 'delete', 'cli-user'])).code).toBe(0);
  });

  it('the live stream ends with an unauthorized line as soon as its token is revoked', async () => {
    const { token } = await controller.api.ok<{ token: string }>('POST', '/v1/tokens', { name: 'live-watcher', roles: ['read'] });
    const res = await fetch(controller.apiUrl + '/v1/live', { headers: { authorization: `Bearer ${token}` } });
    expect(res.headers.get('content-type')).toMatch(/ndjson/);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    while (!text.includes('"type":"workers"')) text += (await reader.read()).value ?? '';
    expect(text).toMatch(/"type":"overview"/);
    await controller.api.ok('DELETE', '/v1/tokens/live-watcher');
    const started = Date.now();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    expect(Date.now() - started).toBeLessThan(5000);
    expect(text.trim().split('\n').at(-1)).toMatch(/"type":"ERROR".*"code":"unauthorized".*revoked/);
  });
});
