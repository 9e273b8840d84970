// Checks for text that arrives from the network and ends up in a database
// column, a log line or a header: PostgreSQL refuses U+0000 in text (an
// error after the transaction began), and control characters in stored
// values end up in headers and logs of other services.

/** C0 controls (U+0000–U+001F, tab and newlines included) and DEL. */
const CONTROL = /[\u0000-\u001f\u007f]/;

export function hasControlChars(s: string): boolean {
  return CONTROL.test(s);
}

/**
 * Why `value` is not an acceptable text field, as the end of a sentence that
 * starts with the field name ("must be a string", …), or null when it is.
 */
export function textProblem(value: unknown, maxLength: number): string | null {
  if (typeof value !== 'string') return 'must be a string';
  if (value.length > maxLength) return `is longer than ${maxLength} characters`;
  if (CONTROL.test(value)) return 'contains control characters';
  return null;
}

/** RFC 9110 token: header names, WebSocket subprotocols. */
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export function isHttpToken(s: string): boolean {
  return HTTP_TOKEN.test(s);
}

/** Outside a field value: anything but HTAB, visible ASCII, SP and obs-text (so CR, LF, NUL and other controls). */
const NOT_FIELD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

/** A header (or chunk-extension) value as RFC 9110 allows it, decoded as latin1. */
export function isFieldValue(s: string): boolean {
  return !NOT_FIELD_VALUE.test(s);
}
