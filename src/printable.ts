/**
 * Text from outside - a file, the network, the service, a web proxy - made safe to print
 * on a terminal and in a log: control characters are escaped (an ESC would recolour the
 * terminal or set its title, a CR or LF would forge a log line, a bidirectional override
 * would reorder what is shown) and a long value is cut (a hostile service may send a
 * 65 KB service id). Every such value is wrapped in `printable()` where it is printed.
 */

/** Characters shown of one value; service ids, regions and host names fit well within it. */
export const MAX_PRINTED_CHARS = 200;
/** Characters shown of a path (a file name read from a directory may hold control characters too). */
export const MAX_PRINTED_PATH_CHARS = 4096;
/** Items shown of one list (service ids of a tunnel). */
export const MAX_PRINTED_ITEMS = 20;

// C0 and C1 controls, DEL, the line/paragraph separators and the bidirectional controls.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function escape(char: string): string {
  if (char === '\t') return '\\t';
  if (char === '\n') return '\\n';
  if (char === '\r') return '\\r';
  const code = char.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** `text` with its control characters escaped (`\x1b`, `\n`, `\u202e`) and cut after `max` characters. */
export function printable(text: string, max = MAX_PRINTED_CHARS): string {
  if (text.length <= max) return text.replace(UNSAFE, escape);
  // Never cut between the two halves of a surrogate pair.
  const end = /[\ud800-\udbff]/.test(text[max - 1]) ? max - 1 : max;
  return `${text.slice(0, end).replace(UNSAFE, escape)}…(${text.length - end} more characters)`;
}

/** Items joined with ", ", each printable, at most `maxItems` of them. */
export function printableList(items: readonly string[], maxItems = MAX_PRINTED_ITEMS): string {
  const shown = items.slice(0, maxItems).map((item) => printable(item));
  if (items.length > maxItems) shown.push(`…(${items.length - maxItems} more)`);
  return shown.join(', ');
}
