// SQL text by shape, for the statements the hot paths build from parts (issue 20).
//
// Why: a statement such as "UPDATE "Vm" SET <these columns> WHERE ..." was assembled from its
// parts at every call, once per VM on the create path: the parts, the joined text and (once the
// statement cache hashed it) its flattened copy were garbage each time, ~10 % of what the
// controller allocated while creating VMs. Built once per shape, the text is one string for the
// process's life: the statement cache (sqlite-connection.ts) finds it by a hash V8 keeps in the
// string, and nothing is allocated for it again.
//
// `shape` must name everything the text depends on (table, columns, row or key count, provider).

/** Most shapes kept (least recently built go first); the hot paths use a few dozen. */
export const SQL_TEXT_CACHE_SIZE = 2000;

const texts = new Map<string, string>();

/** The SQL text of this shape, built by `build` the first time. */
export function sqlText(shape: string, build: () => string): string {
  let text = texts.get(shape);
  if (text === undefined) {
    text = build();
    if (texts.size >= SQL_TEXT_CACHE_SIZE) texts.delete(texts.keys().next().value as string);
    texts.set(shape, text);
  }
  return text;
}

/**
 * `n` rounded up to a power of two (at least 1): lists of keys padded to this length (with a key
 * repeated, which an IN list ignores) take one of a few statement shapes instead of one per length.
 */
export function paddedLength(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
