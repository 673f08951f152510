import { useState } from 'react';

/** Copies text; falls back to a selection copy where the async clipboard API is unavailable (plain-http origins). */
export function CopyButton({ text, label = 'Copy', accessibleLabel }: { text: string; label?: string; accessibleLabel?: string }) {
  const [status, setStatus] = useState('');
  const copy = async () => {
    try {
      if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
      else {
        const area = document.createElement('textarea');
        area.value = text;
        area.setAttribute('readonly', '');
        area.style.position = 'fixed';
        area.style.opacity = '0';
        document.body.appendChild(area);
        area.select();
        const ok = document.execCommand('copy');
        area.remove();
        if (!ok) throw new Error('copy refused');
      }
      setStatus('Copied');
    } catch {
      setStatus('Copy failed: select the text and copy it by hand');
    }
  };
  return (
    <span className="copy">
      <button type="button" aria-label={accessibleLabel} title={accessibleLabel} onClick={() => void copy()}>
        {label}
      </button>
      <span role="status" aria-live="polite" className="muted">
        {status}
      </span>
    </span>
  );
}
