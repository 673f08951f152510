// A destructive action behind a confirmation: a native modal <dialog> (focus is
// trapped and Escape cancels, by the browser) whose default focus is Cancel.
import { useId, useRef, useState, type ReactNode } from 'react';

export function ConfirmButton({ label, title, children, confirmLabel, onConfirm, danger = true, accessibleLabel, disabledReason }: {
  label: string;
  title: string;
  children: ReactNode;
  confirmLabel: string;
  onConfirm: () => Promise<unknown>;
  danger?: boolean;
  accessibleLabel?: string;
  /**
   * When set, the button cannot be used and this says why (a tooltip, and the accessible
   * description). It stays focusable (aria-disabled, not disabled) so keyboard users hear why.
   */
  disabledReason?: string | undefined;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
      dialog.current?.close();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button
        type="button"
        className={danger ? 'danger' : ''}
        aria-label={accessibleLabel}
        aria-disabled={disabledReason ? true : undefined}
        title={disabledReason}
        onClick={() => {
          if (disabledReason) return;
          setError(null);
          dialog.current?.showModal();
        }}
      >
        {label}
      </button>
      <dialog ref={dialog} aria-labelledby={titleId}>
        <h2 id={titleId}>{title}</h2>
        <div>{children}</div>
        {error && <p role="alert" className="error">{error}</p>}
        <div className="dialog-actions">
          <button type="button" autoFocus onClick={() => dialog.current?.close()}>
            Cancel
          </button>
          <button type="button" className={danger ? 'danger' : 'primary'} disabled={busy} onClick={() => void confirm()}>
            {confirmLabel}
          </button>
        </div>
      </dialog>
    </>
  );
}
