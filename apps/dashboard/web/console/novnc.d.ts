// The part of noVNC's RFB class (@novnc/novnc, core/rfb.js; no types shipped) the
// Console tab uses. See noVNC's docs/API.md.
declare module '@novnc/novnc' {
  /** What noVNC's Websock.attach() needs of a raw channel (WebSocket-shaped). */
  export interface RfbRawChannel {
    binaryType: string;
    protocol: string;
    readonly readyState: number | string;
    send(data: ArrayBuffer | ArrayBufferView): void;
    close(): void;
    onopen: ((ev: { type: 'open' }) => void) | null;
    onmessage: ((ev: { type: 'message'; data: ArrayBuffer }) => void) | null;
    onclose: ((ev: { type: 'close'; code: number; reason: string; wasClean: boolean }) => void) | null;
    onerror: ((ev: { type: 'error' }) => void) | null;
  }

  export interface RfbOptions {
    shared?: boolean;
    credentials?: { username?: string; password?: string; target?: string };
    repeaterID?: string;
    wsProtocols?: string[];
  }

  export interface RfbEventMap {
    connect: CustomEvent<Record<string, never>>;
    disconnect: CustomEvent<{ clean: boolean }>;
    credentialsrequired: CustomEvent<{ types: string[] }>;
    securityfailure: CustomEvent<{ status: number; reason?: string }>;
    clipboard: CustomEvent<{ text: string }>;
    bell: CustomEvent<Record<string, never>>;
    desktopname: CustomEvent<{ name: string }>;
    capabilities: CustomEvent<{ capabilities: { power: boolean } }>;
  }

  export default class RFB {
    constructor(target: HTMLElement, urlOrChannel: string | RfbRawChannel, options?: RfbOptions);
    viewOnly: boolean;
    focusOnClick: boolean;
    clipViewport: boolean;
    scaleViewport: boolean;
    resizeSession: boolean;
    showDotCursor: boolean;
    background: string;
    qualityLevel: number;
    compressionLevel: number;
    disconnect(): void;
    sendCtrlAltDel(): void;
    /** Without `down`: a press and a release. `code` is a KeyboardEvent.code (for QEMU's scancode events) or null. */
    sendKey(keysym: number, code: string | null, down?: boolean): void;
    focus(options?: FocusOptions): void;
    blur(): void;
    clipboardPasteFrom(text: string): void;
    addEventListener<K extends keyof RfbEventMap>(type: K, listener: (ev: RfbEventMap[K]) => void): void;
    removeEventListener<K extends keyof RfbEventMap>(type: K, listener: (ev: RfbEventMap[K]) => void): void;
  }
}
