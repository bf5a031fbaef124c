export const TITLE_MAX_CHARS = 60;

/**
 * A title from the first user message: whitespace collapsed, trimmed, cut at a word boundary to at
 * most TITLE_MAX_CHARS (with an ellipsis when cut). Null when the message has no text.
 */
export function titleFromMessage(text: string, maxChars = TITLE_MAX_CHARS): string | null {
  const collapsed = text.replace(/\s+/gu, ' ').trim();
  if (collapsed.length === 0) return null;
  const characters = Array.from(collapsed);
  if (characters.length <= maxChars) return collapsed;
  const head = characters.slice(0, maxChars - 1).join('');
  const endsOnWordBoundary = characters[maxChars - 1] === ' ';
  const lastSpace = head.lastIndexOf(' ');
  // Cut at a word boundary unless that would throw away most of the text (one very long word).
  const cut = endsOnWordBoundary ? head : lastSpace >= Math.floor(maxChars / 2) ? head.slice(0, lastSpace) : head;
  return `${cut.replace(/[\s,.;:!?-]+$/u, '')}…`;
}

/** Cleans a model-suggested title: first line, no surrounding quotes or trailing punctuation, bounded. */
export function cleanModelTitle(raw: string): string | null {
  const firstLine = raw.split('\n').map((line) => line.trim()).find((line) => line.length > 0) ?? '';
  const unquoted = firstLine.replace(/^(title:\s*)/iu, '').replace(/^["'“”‘’]+|["'“”‘’]+$/gu, '').replace(/[.!]+$/u, '').trim();
  return titleFromMessage(unquoted);
}
