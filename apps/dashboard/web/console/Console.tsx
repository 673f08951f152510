// The VM's screen in the browser: noVNC over the controller's session WebSocket
// (kind "vnc"; protocol in docs/api.md "Sessions"). Loaded lazily (noVNC is only
// fetched when the Console tab opens). Reconnects by itself after a network blip,
// with backoff, while the tab is open and the VM runs.
import { useCallback, useEffect, useRef, useState } from 'react';
import RFB from '@novnc/novnc';
import type { ApiClient } from '../api/client.ts';
import { FleetRfbChannel, retryDelay } from './rfb-channel.ts';
import { textToKeys, XK_SHIFT_L } from './keys.ts';

type Status =
  | { kind: 'stopped'; message: string } // the VM does not run: nothing to show
  | { kind: 'connecting' }
  | { kind: 'waiting'; message: string } // the server waits for the VM (progress frames)
  | { kind: 'connected' }
  | { kind: 'disconnected'; message: string; retryInMs: number | null };

const WAIT_MS = 60_000;

/** The server's messages come without a full stop; the status line adds one before "Retrying…". */
const sentence = (text: string) => (/[.!?…]$/.test(text) ? text : `${text}.`);
export function Console({ api, vm, running, vmState }: { api: ApiClient; vm: string; running: boolean; vmState: string }) {
  const screen = useRef<HTMLDivElement>(null);
  const rfbRef = useRef<RFB | null>(null);
  const failures = useRef(0);
  const [attempt, setAttempt] = useState(0); // bump to reconnect
  const [paused, setPaused] = useState(false); // the user pressed Disconnect: no automatic retries
  const [status, setStatus] = useState<Status>({ kind: 'connecting' });
  const [scale, setScale] = useState(true);
  const scaleRef = useRef(scale);
  const [clipboard, setClipboard] = useState('');
  const [clipboardNote, setClipboardNote] = useState('');

  useEffect(() => {
    if (!running) {
      setStatus({ kind: 'stopped', message: `The VM is ${vmState}: the console shows once it runs.` });
      return;
    }
    if (paused || !screen.current) return;
    const target = screen.current;
    const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${window.location.host}/v1/vms/${encodeURIComponent(vm)}/session`, ['fleet.v1', `fleet.bearer.${api.token}`]);
    let disposed = false;
    let ended = false;
    let retryTimer: ReturnType<typeof setTimeout> | undefined;
    let rfbFailure = '';
    const channel = new FleetRfbChannel(ws, {
      waitMs: WAIT_MS,
      onProgress: (message) => !disposed && setStatus({ kind: 'waiting', message }),
    });
    setStatus({ kind: 'connecting' });
    const rfb = new RFB(target, channel, { shared: true });
    rfb.scaleViewport = scaleRef.current;
    rfb.resizeSession = false; // QEMU's VGA console has a fixed mode; the browser scales instead
    rfb.background = '#111';
    rfb.addEventListener('connect', () => {
      if (disposed) return;
      failures.current = 0;
      setStatus({ kind: 'connected' });
      rfb.focus({ preventScroll: true });
    });
    rfb.addEventListener('securityfailure', (ev) => {
      rfbFailure = `VNC security negotiation failed${ev.detail.reason ? `: ${ev.detail.reason}` : ''}.`;
    });
    rfb.addEventListener('credentialsrequired', () => {
      // Fleet's consoles use security type None; a password prompt means another server answered.
      rfbFailure = 'The VNC server asks for credentials, which Fleet does not have.';
      rfb.disconnect();
    });
    rfb.addEventListener('clipboard', (ev) => {
      setClipboard(ev.detail.text);
      setClipboardNote('Received from the VM.');
    });
    rfb.addEventListener('disconnect', () => {
      ended = true;
      if (disposed) return;
      rfbRef.current = null;
      const message = rfbFailure || channel.closeReason || 'The VNC connection ended.';
      if (!channel.retryable || rfbFailure) {
        setStatus({ kind: 'disconnected', message, retryInMs: null });
        return;
      }
      const delay = retryDelay(failures.current++);
      setStatus({ kind: 'disconnected', message, retryInMs: delay });
      retryTimer = setTimeout(() => setAttempt((n) => n + 1), delay);
    });
    rfbRef.current = rfb;
    return () => {
      disposed = true;
      clearTimeout(retryTimer);
      rfbRef.current = null;
      if (!ended) rfb.disconnect();
    };
  }, [api, vm, running, vmState, paused, attempt]);

  const toggleScale = useCallback(() => {
    setScale((s) => {
      scaleRef.current = !s;
      if (rfbRef.current) rfbRef.current.scaleViewport = !s;
      return !s;
    });
  }, []);

  const reconnect = () => {
    failures.current = 0;
    setPaused(false);
    setAttempt((n) => n + 1);
  };
  const disconnect = () => {
    setPaused(true);
    setStatus({ kind: 'disconnected', message: 'Disconnected.', retryInMs: null });
  };

  const typeText = () => {
    const rfb = rfbRef.current;
    if (!rfb) return;
    for (const k of textToKeys(clipboard)) {
      if (k.shift) rfb.sendKey(XK_SHIFT_L, 'ShiftLeft', true);
      rfb.sendKey(k.keysym, k.code);
      if (k.shift) rfb.sendKey(XK_SHIFT_L, 'ShiftLeft', false);
    }
    setClipboardNote(`Typed ${clipboard.length} characters.`);
    rfb.focus({ preventScroll: true });
  };
  const sendClipboard = () => {
    rfbRef.current?.clipboardPasteFrom(clipboard);
    setClipboardNote("Sent to the VM's clipboard (only a guest with a clipboard agent uses it).");
  };

  const connected = status.kind === 'connected';
  return (
    <div className="console">
      <div className="console-bar">
        <span role="status" aria-live="polite" className="muted" data-console-status={status.kind}>
          {status.kind === 'stopped' && status.message}
          {status.kind === 'connecting' && 'Connecting…'}
          {status.kind === 'waiting' && `Waiting for the VM: ${status.message}`}
          {status.kind === 'connected' && 'Connected. Click the screen to type into it.'}
          {status.kind === 'disconnected' && `Disconnected: ${sentence(status.message)}${status.retryInMs !== null ? ` Retrying in ${Math.round(status.retryInMs / 1000)} s…` : ''}`}
        </span>
        <span className="actions">
          <button type="button" onClick={() => rfbRef.current?.sendCtrlAltDel()} disabled={!connected}>
            Send Ctrl-Alt-Del
          </button>
          <button type="button" onClick={toggleScale} aria-pressed={!scale}>
            {scale ? 'Actual size (1:1)' : 'Scale to fit'}
          </button>
          {status.kind === 'connected' || status.kind === 'connecting' || status.kind === 'waiting' ? (
            <button type="button" onClick={disconnect}>
              Disconnect
            </button>
          ) : (
            <button type="button" className="primary" onClick={reconnect} disabled={!running}>
              Reconnect
            </button>
          )}
        </span>
      </div>
      <div ref={screen} className={scale ? 'console-screen scaled' : 'console-screen'} aria-label={`Screen of ${vm}`} data-scale={scale ? 'fit' : '1:1'} />
      <div className="console-clipboard">
        <label htmlFor="console-clipboard">Clipboard / text to type</label>
        <textarea id="console-clipboard" rows={2} value={clipboard} onChange={(e) => setClipboard(e.target.value)} placeholder="Text from the VM's clipboard appears here; text typed here can be sent." />
        <span className="actions">
          <button type="button" onClick={typeText} disabled={!connected || clipboard === ''} title="Types the text as key presses (US layout): works on any console, including a text console without clipboard">
            Type into the VM
          </button>
          <button type="button" onClick={sendClipboard} disabled={!connected || clipboard === ''} title="RFB client cut text: only a guest with a clipboard agent uses it">
            Send as clipboard
          </button>
          <span className="muted" aria-live="polite">
            {clipboardNote}
          </span>
        </span>
      </div>
    </div>
  );
}
