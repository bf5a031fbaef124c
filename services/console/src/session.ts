/**
 * What the page keeps between reloads, all in sessionStorage (it dies with the tab): the token, the
 * open conversation, and each unfinished turn's stream position and text so far, so a reload resumes
 * the stream with `starting_after` instead of losing the answer.
 */
const TOKEN_KEY = 'ic-console.token';
const PENDING_KEY = 'ic-console.pending';

export function takeTokenFromFragment(): string | null {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (!token) return null;
  params.delete('token');
  // The fragment never reached the server; drop it from the address bar and history as well.
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
  return token;
}

export const savedToken = (): string | null => sessionStorage.getItem(TOKEN_KEY);
export const saveToken = (token: string): void => sessionStorage.setItem(TOKEN_KEY, token);
export const forgetToken = (): void => {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(PENDING_KEY);
};

/** The conversation shown, kept in the fragment so a reload (or a copied link) opens it again. */
export function conversationInAddress(): string | null {
  return new URLSearchParams(location.hash.slice(1)).get('conversation');
}
export function showConversationInAddress(id: string | null): void {
  history.replaceState(null, '', `${location.pathname}${location.search}${id ? `#conversation=${encodeURIComponent(id)}` : ''}`);
}

/** An unfinished turn: which run, how far its stream was read, what it showed. */
export interface PendingTurn {
  conversationId: string;
  responseId: string;
  input: string;
  lastSequence: number;
  text: string;
}

function readPending(): PendingTurn[] {
  try {
    const parsed: unknown = JSON.parse(sessionStorage.getItem(PENDING_KEY) ?? '[]');
    return Array.isArray(parsed) ? (parsed as PendingTurn[]) : [];
  } catch {
    return [];
  }
}

export function pendingTurns(conversationId: string): PendingTurn[] {
  return readPending().filter((turn) => turn.conversationId === conversationId);
}

export function savePending(turn: PendingTurn): void {
  const others = readPending().filter((existing) => existing.responseId !== turn.responseId);
  sessionStorage.setItem(PENDING_KEY, JSON.stringify([...others, turn]));
}

export function dropPending(responseId: string): void {
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(readPending().filter((turn) => turn.responseId !== responseId)));
}
