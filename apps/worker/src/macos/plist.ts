// A minimal XML property-list writer (launchd plists, entitlements): strings, booleans, integers,
// arrays and dictionaries, escaped. Enough for files we generate; we never parse plists.
export type PlistValue = string | number | boolean | PlistValue[] | { [k: string]: PlistValue | undefined };

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

function value(v: PlistValue, indent: string): string {
  if (typeof v === 'string') return `${indent}<string>${escapeXml(v)}</string>`;
  if (typeof v === 'boolean') return `${indent}<${v}/>`;
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`plist: only integers are supported, got ${v}`);
    return `${indent}<integer>${v}</integer>`;
  }
  if (Array.isArray(v)) return [`${indent}<array>`, ...v.map((x) => value(x, indent + '\t')), `${indent}</array>`].join('\n');
  const lines = [`${indent}<dict>`];
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined) continue;
    lines.push(`${indent}\t<key>${escapeXml(k)}</key>`, value(x, indent + '\t'));
  }
  lines.push(`${indent}</dict>`);
  return lines.join('\n');
}

export function toPlist(root: { [k: string]: PlistValue | undefined }): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    value(root, ''),
    '</plist>',
    '',
  ].join('\n');
}
