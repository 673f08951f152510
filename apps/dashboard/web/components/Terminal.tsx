// A browser terminal into a VM over the controller's session WebSocket
// (GET /v1/vms/{name}/session; protocol in docs/dashboard.md). Browsers cannot
// set headers on WebSockets, so the token travels as the subprotocol
// "fleet.bearer.<token>" next to "fleet.v1".
import { useEffect, useRef, useState } from 'react';
import { Terminal as XTerm } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import type { ApiClient } from '../api/client.ts';

type Status =
  | { kind: 'checking' }
  | { kind: 'unavailable'; message: string }
  | { kind: 'idle' }
  | { kind: 'connecting'; message: string }
  | { kind: 'open' }
  | { kind: 'closed'; message: string };

type ServerMessage =
  | { type: 'progress'; stage: string; message?: string }
  | { type: 'started'; sessionId: string }
  | { type: 'exit'; code: number | null; signal: string | null }
  | { type: 'error'; code: string; message: string };

const CHANNEL_STDIN = 0;
const CHANNEL_STDOUT = 1;
const CHANNEL_STDERR = 2;

function parseServerMessage(text: string): ServerMessage | null {
  try {
    const m = JSON.parse(text) as { type?: unknown };
    return typeof m === 'object' && m !== null && typeof m.type === 'string' ? (m as ServerMessage) : null;
  } catch {
    return null;
  }
}

/** Does this controller have the session endpoint at all? (An unknown route answers the API's "no route" 404.) */
async function sessionEndpointExists(api: ApiClient, vm: string): Promise<boolean> {
  const res = await fetch(`/v1/vms/${encodeURIComponent(vm)}/session`, { headers: { authorization: `Bearer ${api.token}` } });
  if (res.status !== 404) return true;
  const body = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
  return !/^no route/.test(body.error?.message ?? '');
}

export function Terminal({ api, vm, running }: { api: ApiClient; vm: string; running: boolean }) {
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>({ kind: 'checking' });
  const [session, setSession] = useState(0); // bump to (re)connect

  useEffect(() => {
    let cancelled = false;
    sessionEndpointExists(api, vm)
      .then((ok) => !cancelled && setStatus(ok ? { kind: 'idle' } : { kind: 'unavailable', message: 'This controller has no session endpoint yet (GET /v1/vms/{name}/session), so the browser terminal is not available.' }))
      .catch((err: unknown) => !cancelled && setStatus({ kind: 'unavailable', message: `Could not reach the controller: ${String(err)}` }));
    return () => {
      cancelled = true;
    };
  }, [api, vm]);

  useEffect(() => {
    if (session === 0 || !host.current) return;
    const term = new XTerm({ convertEol: false, cursorBlink: true, fontSize: 14, fontFamily: 'ui-monospace, Menlo, Consolas, monospace', screenReaderMode: false });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host.current);
    fit.fit();
    // The current size, readable by tests and assistive tooling.
    const el = host.current;
    const showSize = () => {
      el.dataset.rows = String(term.rows);
      el.dataset.cols = String(term.cols);
    };
    showSize();
    const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${window.location.host}/v1/vms/${encodeURIComponent(vm)}/session`, ['fleet.v1', `fleet.bearer.${api.token}`]);
    ws.binaryType = 'arraybuffer';
    const encoder = new TextEncoder();
    let ended = false;
    const end = (message: string) => {
      if (ended) return;
      ended = true;
      setStatus({ kind: 'closed', message });
    };
    setStatus({ kind: 'connecting', message: 'connecting…' });

    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'start', kind: 'ssh', tty: true, rows: term.rows, cols: term.cols }));
    };
    ws.onmessage = (ev: MessageEvent<ArrayBuffer | string>) => {
      if (typeof ev.data === 'string') {
        const m = parseServerMessage(ev.data);
        if (!m) return;
        if (m.type === 'progress') setStatus({ kind: 'connecting', message: m.message ?? m.stage });
        else if (m.type === 'started') {
          setStatus({ kind: 'open' });
          term.focus();
        } else if (m.type === 'exit') end(`Session ended (exit ${m.code ?? m.signal ?? '?'}).`);
        else if (m.type === 'error') end(`Session error (${m.code}): ${m.message}`);
        return;
      }
      const bytes = new Uint8Array(ev.data);
      if (bytes.length === 0) return;
      if (bytes[0] === CHANNEL_STDOUT || bytes[0] === CHANNEL_STDERR) term.write(bytes.subarray(1));
    };
    ws.onclose = (ev) => end(ev.code === 1000 ? 'Session closed.' : `Connection closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''}).`);
    ws.onerror = () => end('Connection failed.');

    const input = term.onData((data) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      const payload = encoder.encode(data);
      const frame = new Uint8Array(payload.length + 1);
      frame[0] = CHANNEL_STDIN;
      frame.set(payload, 1);
      ws.send(frame);
    });
    const resized = term.onResize(({ rows, cols }) => {
      showSize();
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', rows, cols }));
    });
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(host.current);
    return () => {
      observer.disconnect();
      input.dispose();
      resized.dispose();
      ws.close(1000);
      term.dispose();
    };
  }, [session, api, vm]);

  const canConnect = status.kind === 'idle' || status.kind === 'closed';
  return (
    <div className="terminal">
      <div className="terminal-bar">
        <button type="button" className="primary" disabled={!canConnect || !running} onClick={() => setSession((n) => n + 1)}>
          {status.kind === 'closed' ? 'Reconnect terminal' : 'Open terminal'}
        </button>
        <span role="status" aria-live="polite" className="muted" data-terminal-status={status.kind}>
          {status.kind === 'checking' && 'Checking for the session endpoint…'}
          {status.kind === 'unavailable' && `Terminal not available: ${status.message}`}
          {status.kind === 'idle' && (running ? 'Opens an SSH session (same path as `fleet ssh`).' : 'The VM must be running to open a terminal.')}
          {status.kind === 'connecting' && `Connecting: ${status.message}`}
          {status.kind === 'open' && 'Connected.'}
          {status.kind === 'closed' && status.message}
        </span>
      </div>
      <div ref={host} className="terminal-host" aria-label={`Terminal for ${vm}`} hidden={session === 0} />
    </div>
  );
}
