/**
 * Checks on client JSON that no zod schema expresses generically: PostgreSQL cannot store U+0000 in
 * text or jsonb (nor a lone UTF-16 surrogate in jsonb), and deeply nested values overflow the stack of recursive code further on
 * (JSON.stringify, validators, the jsonb encoder). Both are the client's mistake, so both are a 400
 * naming the place, found by one walk over the parsed value before any schema sees it.
 */

/** Deeper than any body the API accepts legitimately (tool parameter schemas included). */
export const MAX_JSON_DEPTH = 64;

export type JsonPath = Array<string | number>;
export type HostileValue = { problem: 'unstorable_text' | 'too_deep'; path: JsonPath };

/** U+0000, or half of a surrogate pair without its other half (not text in any encoding PostgreSQL stores). */
// eslint-disable-next-line no-control-regex -- U+0000 is exactly what this looks for
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

interface Visit {
  value: unknown;
  key: string | number | undefined;
  parent: Visit | null;
  depth: number;
}

const pathOf = (visit: Visit): JsonPath => {
  const path: JsonPath = [];
  for (let at: Visit | null = visit; at && at.key !== undefined; at = at.parent) path.unshift(at.key);
  return path;
};

/** The first string (value or key) holding U+0000 or a lone surrogate, or the first value nested deeper than `maxDepth`; null when clean. */
export function findHostileValue(value: unknown, maxDepth = MAX_JSON_DEPTH): HostileValue | null {
  // Iterative on purpose: a recursive walk would itself overflow on the inputs it guards against. Paths
  // are rebuilt from parent links only for the value reported, so a clean megabyte body costs little.
  const stack: Visit[] = [{ value, key: undefined, parent: null, depth: 0 }];
  while (stack.length > 0) {
    const visit = stack.pop()!;
    const { value: current, key } = visit;
    if (typeof key === 'string' && UNSTORABLE.test(key)) return { problem: 'unstorable_text', path: pathOf(visit) };
    if (typeof current === 'string') {
      if (UNSTORABLE.test(current)) return { problem: 'unstorable_text', path: pathOf(visit) };
      continue;
    }
    if (current === null || typeof current !== 'object') continue;
    if (visit.depth >= maxDepth) return { problem: 'too_deep', path: pathOf(visit) };
    const depth = visit.depth + 1;
    // Pushed in reverse so the first offending field in document order is the one reported.
    if (Array.isArray(current)) {
      for (let index = current.length - 1; index >= 0; index--) stack.push({ value: current[index], key: index, parent: visit, depth });
    } else {
      const keys = Object.keys(current);
      for (let index = keys.length - 1; index >= 0; index--) {
        const childKey = keys[index]!;
        stack.push({ value: (current as Record<string, unknown>)[childKey], key: childKey, parent: visit, depth });
      }
    }
  }
  return null;
}

/** `input[0].content[1].text`, with control characters escaped so the param itself is printable. */
export function formatJsonPath(path: Readonly<JsonPath>): string {
  const formatted = path.reduce<string>((out, part) => (typeof part === 'number' ? `${out}[${part}]` : out ? `${out}.${part}` : part), '');
  // eslint-disable-next-line no-control-regex
  return formatted.replace(/[\u0000-\u001f\ud800-\udfff]/g, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
