// "Type text" for the Console tab: text → key presses. A VGA text console has no
// clipboard (RFB cut text needs a guest agent), so pasting a long command means
// typing it. QEMU's VNC server takes scancodes (the QEMU extended key event noVNC
// uses when it has a KeyboardEvent.code), so each character becomes the key of a
// US keyboard that produces it, with Shift held where that layout needs it.

export interface KeyPress {
  keysym: number;
  /** KeyboardEvent.code of the US-layout key, or null (noVNC then sends the keysym alone). */
  code: string | null;
  shift: boolean;
}

export const XK_SHIFT_L = 0xffe1;
const XK_RETURN = 0xff0d;
const XK_TAB = 0xff09;

const UNSHIFTED: Record<string, string> = { '-': 'Minus', '=': 'Equal', '[': 'BracketLeft', ']': 'BracketRight', '\\': 'Backslash', ';': 'Semicolon', "'": 'Quote', ',': 'Comma', '.': 'Period', '/': 'Slash', '`': 'Backquote', ' ': 'Space' };
const SHIFTED: Record<string, string> = { '!': 'Digit1', '@': 'Digit2', '#': 'Digit3', $: 'Digit4', '%': 'Digit5', '^': 'Digit6', '&': 'Digit7', '*': 'Digit8', '(': 'Digit9', ')': 'Digit0', _: 'Minus', '+': 'Equal', '{': 'BracketLeft', '}': 'BracketRight', '|': 'Backslash', ':': 'Semicolon', '"': 'Quote', '<': 'Comma', '>': 'Period', '?': 'Slash', '~': 'Backquote' };

export function textToKeys(text: string): KeyPress[] {
  const out: KeyPress[] = [];
  for (const ch of text.replace(/\r\n?/g, '\n')) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === '\n') out.push({ keysym: XK_RETURN, code: 'Enter', shift: false });
    else if (ch === '\t') out.push({ keysym: XK_TAB, code: 'Tab', shift: false });
    else if (/^[a-z]$/.test(ch)) out.push({ keysym: cp, code: `Key${ch.toUpperCase()}`, shift: false });
    else if (/^[A-Z]$/.test(ch)) out.push({ keysym: cp, code: `Key${ch}`, shift: true });
    else if (/^[0-9]$/.test(ch)) out.push({ keysym: cp, code: `Digit${ch}`, shift: false });
    else if (UNSHIFTED[ch]) out.push({ keysym: cp, code: UNSHIFTED[ch], shift: false });
    else if (SHIFTED[ch]) out.push({ keysym: cp, code: SHIFTED[ch], shift: true });
    else if (cp >= 0x20) out.push({ keysym: cp < 0x100 ? cp : 0x01000000 + cp, code: null, shift: false }); // X11: Unicode keysyms above Latin-1
  }
  return out;
}
