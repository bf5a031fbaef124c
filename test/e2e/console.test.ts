/**
 * The console in a real browser: headless Chromium (Debian's `chromium`, driven by playwright-core)
 * against the turn path as deployed (Postgres, BullMQ on Redis, workers, titler) with the fake
 * upstream, the page served on the API's own origin as the gateway serves it. Every step goes through
 * what a person uses: the accessible names of the issue (Message, Send, Stop, Conversations, Search,
 * Title, Rename, Delete, New chat).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import OpenAI from 'openai';
import { mintToken, SCOPES } from '@ic/auth';
import { createTokensRepo } from '@ic/db';
import { seedSmith, startTurnStack, tokenFor, type TurnStack } from '../support';

/** Debian's chromium; `.ci/run` installs it when missing. Absent, this file fails rather than skipping. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const DOCS = path.resolve(__dirname, '../../docs');
/** Generous: two cores shared with other suites; nothing here measures speed. */
const UI_TIMEOUT_MS = 20000;
// A scenario is several page steps, each allowed UI_TIMEOUT_MS on a loaded machine.
jest.setTimeout(90000);

let stack: TurnStack;
let browser: Browser;
const contexts: BrowserContext[] = [];
/** Uncaught exceptions in the page and Content-Security-Policy refusals: each scenario must end with none. */
const pageErrors: string[] = [];

beforeAll(async () => {
  stack = await startTurnStack({ console: true, rateLimits: { requestsPerMinute: 100000, turnsPerMinute: 25 } });
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  } catch (error) {
    throw new Error(`Cannot start Chromium at ${CHROMIUM} (install Debian's chromium package, as .ci/run does, or set CHROMIUM_PATH): ${(error as Error).message}`, { cause: error });
  }
}, 60000);

afterEach(async () => {
  await Promise.all(contexts.splice(0).map((context) => context.close()));
  stack.upstream.reset();
  expect(pageErrors.splice(0)).toEqual([]);
});

afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

/** A smith of the stack's tenant with a token of every scope, so each scenario starts from an empty sidebar. */
async function newSmith(): Promise<{ smithId: string; token: string; client: OpenAI }> {
  const smith = await seedSmith(stack.db.pool, stack.seeded.tenant.id, 'fake-default-model');
  const token = await tokenFor(stack.db.pool, stack.seeded.tenant.id, smith.id, [...SCOPES]);
  return { smithId: smith.id, token, client: stack.client(token) };
}

/** Opens the console through the link `npm start` prints (the token in the fragment). */
async function openConsole(token: string, viewport = { width: 1280, height: 800 }, colorScheme: 'light' | 'dark' = 'light'): Promise<Page> {
  const context = await browser.newContext({ viewport, colorScheme });
  contexts.push(context);
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) pageErrors.push(message.text());
  });
  page.setDefaultTimeout(UI_TIMEOUT_MS);
  await page.goto(`${stack.origin}/console#token=${token}`);
  await isVisible(page.getByRole('button', { name: 'New chat' }));
  return page;
}

const sidebar = (page: Page) => page.getByRole('list', { name: 'Conversations' });
const messageBox = (page: Page) => page.getByRole('textbox', { name: 'Message' });
const turns = (page: Page) => page.getByRole('log', { name: 'Messages' }).locator('li.turn');

async function send(page: Page, text: string): Promise<void> {
  await messageBox(page).fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
}

/** Polls `read` until `ok` holds (the page updates on its own time), failing with what it saw last. */
async function until<T>(what: string, read: () => Promise<T>, ok: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + UI_TIMEOUT_MS;
  let last: T | undefined;
  let failure: unknown;
  for (;;) {
    try {
      last = await read();
      if (ok(last)) return last;
    } catch (error) {
      failure = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`Timed out waiting for ${what}; last seen: ${JSON.stringify(last)}${failure ? ` (${(failure as Error).message.split('\n')[0]})` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const text = async (locator: Locator) => ((await locator.textContent({ timeout: 1000 })) ?? '').trim();
const hasCount = (locator: Locator, count: number) => until(`${locator} ×${count}`, () => locator.count(), (seen) => seen === count);
const hasText = (locator: Locator, expected: string) => until(`${locator} = ${expected}`, () => text(locator), (seen) => seen === expected);
const containsText = (locator: Locator, expected: string | RegExp) =>
  until(`${locator} ∋ ${expected}`, () => text(locator), (seen) => (typeof expected === 'string' ? seen.includes(expected) : expected.test(seen)));
const hasAttribute = (locator: Locator, name: string, expected: string) =>
  until(`${locator}[${name}=${expected}]`, () => locator.getAttribute(name, { timeout: 1000 }), (seen) => seen === expected);
const hasValue = (locator: Locator, expected: string) => until(`${locator} value ${expected}`, () => locator.inputValue({ timeout: 1000 }), (seen) => seen === expected);
const isVisible = (locator: Locator) => locator.waitFor({ state: 'visible', timeout: UI_TIMEOUT_MS });
const isFocused = (locator: Locator) => until(`${locator} focused`, () => locator.evaluate((element) => element === document.activeElement, undefined, { timeout: 1000 }), Boolean);
const isDisabled = (locator: Locator) => until(`${locator} disabled`, () => locator.isDisabled({ timeout: 1000 }), Boolean);

/** `count` words, streamed by the fake upstream one chunk each. */
const words = (count: number, prefix: string) => Array.from({ length: count }, (_, index) => `${prefix}${index + 1}`).join(' ');

describe('console in Chromium', () => {
  it('signs in through the link, keeps the token out of the address, and streams an answer token by token', async () => {
    const { token } = await newSmith();
    const reply = words(12, 'tok');
    stack.upstream.set({ reply, tokenDelayMs: 250 });
    const page = await openConsole(token);
    expect(new URL(page.url()).hash).not.toContain('token');
    expect(await page.evaluate(() => sessionStorage.getItem('ic-console.token'))).toBe(token);

    await send(page, 'Hello there');
    const answer = turns(page).last().locator('.answer');
    // Seen while it streams: the first tokens are on screen before the last one has arrived.
    await page.waitForFunction(() => {
      const text = document.querySelector('li.turn:last-child .answer')?.textContent ?? '';
      return text.includes('tok1') && !text.includes('tok12');
    });
    await hasText(answer, reply);
    await hasAttribute(turns(page).last(), 'data-status', 'completed');
    await hasValue(messageBox(page), '');
  });

  it('shows the first turn’s title in the sidebar without a reload; Enter sends, Shift+Enter is a new line', async () => {
    const { token } = await newSmith();
    const page = await openConsole(token);
    await messageBox(page).fill('Plan a trip to Oslo');
    await messageBox(page).press('Shift+Enter');
    await messageBox(page).press('End');
    await messageBox(page).pressSequentially('in May');
    await hasValue(messageBox(page), 'Plan a trip to Oslo\nin May');
    await messageBox(page).press('Enter');
    await hasAttribute(turns(page).last(), 'data-status', 'completed');
    await isVisible(sidebar(page).getByRole('button', { name: 'Plan a trip to Oslo in May' }));
    await hasText(page.getByRole('heading', { level: 2 }), 'Plan a trip to Oslo in May');
  });

  it('renames inline (textbox "Title") and deletes after a confirmation, both reflected in the sidebar at once', async () => {
    const { token, client } = await newSmith();
    const conversation = await client.conversations.create({ metadata: {} });
    await client.post(`/conversations/${conversation.id}`, { body: { title: 'Before' } });
    const page = await openConsole(token);
    await sidebar(page).getByRole('button', { name: 'Before' }).click();
    await page.getByRole('button', { name: 'Rename' }).click();
    const title = page.getByRole('textbox', { name: 'Title' });
    await isFocused(title);
    await title.fill('After the rename');
    await title.press('Enter');
    await isVisible(sidebar(page).getByRole('button', { name: 'After the rename' }));
    await hasCount(sidebar(page).getByRole('button', { name: 'Before' }), 0);
    expect(((await client.conversations.retrieve(conversation.id)) as unknown as { title: string }).title).toBe('After the rename');

    await page.getByRole('button', { name: 'Delete' }).click();
    const dialog = page.getByRole('dialog', { name: 'Delete this conversation?' });
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await isVisible(sidebar(page).getByRole('button', { name: 'After the rename' }));
    await page.getByRole('button', { name: 'Delete' }).click();
    await dialog.getByRole('button', { name: 'Delete' }).click();
    await hasCount(sidebar(page).getByRole('button', { name: 'After the rename' }), 0);
    await hasText(page.getByRole('heading', { level: 2 }), 'New chat');
    await expect(client.conversations.retrieve(conversation.id)).rejects.toMatchObject({ status: 404 });
  });

  it('Stop cancels a slow answer', async () => {
    const { token } = await newSmith();
    stack.upstream.set({ reply: words(60, 'slow'), tokenDelayMs: 300 });
    const page = await openConsole(token);
    await send(page, 'Tell me a long story');
    await containsText(turns(page).last().locator('.answer'), 'slow2');
    await page.getByRole('button', { name: 'Stop' }).click();
    await hasAttribute(turns(page).last(), 'data-status', 'cancelled');
    await hasText(turns(page).last().getByRole('status'), 'Stopped.');
    await isDisabled(page.getByRole('button', { name: 'Stop' }));
    await stack.upstream.waitForAborts(1);
  });

  it('a message sent while a turn runs is queued, shown as queued, and answered after it', async () => {
    const { token } = await newSmith();
    stack.upstream.set({ reply: (request) => `${words(12, 'part')} for ${JSON.stringify(request.messages.at(-1)?.content)}`, tokenDelayMs: 200 });
    const page = await openConsole(token);
    await send(page, 'first');
    await containsText(turns(page).first().locator('.answer'), 'part1');
    await send(page, 'second');
    await containsText(turns(page).nth(1).getByRole('status'), 'Queued');
    await hasAttribute(turns(page).nth(0), 'data-status', 'completed');
    await hasAttribute(turns(page).nth(1), 'data-status', 'completed');
    await containsText(turns(page).nth(1).locator('.answer'), 'for "second"');
  });

  it('a reload in the middle of an answer resumes the stream (starting_after) and finishes it once', async () => {
    const { token } = await newSmith();
    const reply = words(24, 'resume');
    stack.upstream.set({ reply, tokenDelayMs: 250 });
    const page = await openConsole(token);
    await send(page, 'Keep going after a reload');
    await containsText(turns(page).last().locator('.answer'), 'resume3');
    const resumed = page.waitForRequest((request) => /\/v1\/responses\/[^/?]+\?(.*&)?starting_after=\d+/.test(request.url()) && request.method() === 'GET');
    await page.reload();
    await resumed;
    await hasAttribute(turns(page).last(), 'data-status', 'completed');
    await hasText(turns(page).last().locator('.answer'), reply);
    await hasCount(page.getByRole('log', { name: 'Messages' }).getByText('Keep going after a reload'), 1);
    // After another reload the stored transcript shows it, once.
    await page.reload();
    await hasCount(page.getByRole('log', { name: 'Messages' }).getByText(reply), 1);
  });

  it('the sidebar lists 60 conversations newest first and loads the next page as it scrolls', async () => {
    const { token, client } = await newSmith();
    // One after another, so each is newer than the one before.
    for (let index = 1; index <= 60; index++) await client.post('/conversations', { body: { title: `Paged ${String(index).padStart(2, '0')}` } });
    const page = await openConsole(token);
    const entries = sidebar(page).getByRole('listitem');
    await hasCount(entries, 30);
    // Created last, so the most recent activity.
    await hasText(entries.first(), 'Paged 60');
    await entries.last().scrollIntoViewIfNeeded();
    await hasCount(entries, 60);
    const titles = await entries.allTextContents();
    expect(new Set(titles).size).toBe(60);
    expect(titles.at(-1)).toBe('Paged 01');
  });

  it('the Search box filters the sidebar by title', async () => {
    const { token, client } = await newSmith();
    for (const title of ['Trip to Oslo', 'Budget for May', 'oslo museums', 'Groceries']) {
      const conversation = await client.conversations.create();
      await client.post(`/conversations/${conversation.id}`, { body: { title } });
    }
    const page = await openConsole(token);
    await hasCount(sidebar(page).getByRole('listitem'), 4);
    await page.getByRole('searchbox', { name: 'Search' }).fill('OSLO');
    await hasCount(sidebar(page).getByRole('listitem'), 2);
    expect((await sidebar(page).getByRole('listitem').allTextContents()).sort()).toEqual(['Trip to Oslo', 'oslo museums']);
    await page.getByRole('searchbox', { name: 'Search' }).fill('');
    await hasCount(sidebar(page).getByRole('listitem'), 4);
  });

  it('a revoked token sends the person back to sign in, saying why', async () => {
    const smith = await seedSmith(stack.db.pool, stack.seeded.tenant.id, 'fake-default-model');
    const { token, row } = await mintToken(stack.db.pool, { tenantId: stack.seeded.tenant.id, kind: 'smith', smithId: smith.id, scopes: [...SCOPES] });
    const page = await openConsole(token);
    await createTokensRepo(stack.db.pool).revoke(row.id);
    await send(page, 'Are you still there?');
    await isVisible(page.getByLabel('Smith token'));
    await containsText(page.getByRole('alert'), 'revoked');
    expect(await page.evaluate(() => sessionStorage.getItem('ic-console.token'))).toBeNull();
  });

  it('a token without the write scope is told so in words, and stays signed in', async () => {
    const smith = await seedSmith(stack.db.pool, stack.seeded.tenant.id, 'fake-default-model');
    const readOnly = await tokenFor(stack.db.pool, stack.seeded.tenant.id, smith.id, ['conversations:read', 'responses:read']);
    const page = await openConsole(readOnly);
    await send(page, 'Can I write?');
    await containsText(page.getByRole('alert'), "This token is not allowed to do that: This token lacks the 'conversations:write' scope");
    await isVisible(page.getByRole('textbox', { name: 'Message' }));
  });

  it('a rate-limited turn says how long to wait', async () => {
    const { token, client } = await newSmith();
    const conversation = await client.conversations.create();
    // Spend the smith's turns for this minute (25, the stack's limit).
    for (let index = 0; index < 25; index++) await client.responses.create({ model: '', conversation: conversation.id, input: `turn ${index}`, background: true });
    const page = await openConsole(token);
    await send(page, 'One more');
    await hasAttribute(turns(page).last(), 'data-status', 'failed');
    await containsText(turns(page).last().getByRole('alert'), /Too many requests: wait \d+ seconds? and try again/);
    await isVisible(turns(page).last().getByRole('button', { name: 'Retry' }));
  });

  it('a failed turn shows its message and a Retry button that sends it again', async () => {
    const { token } = await newSmith();
    stack.upstream.failNext(400, 1);
    const page = await openConsole(token);
    await send(page, 'This one fails first');
    await hasAttribute(turns(page).last(), 'data-status', 'failed');
    await containsText(turns(page).last().getByRole('alert'), 'Fake upstream failure 400');
    await turns(page).last().getByRole('button', { name: 'Retry' }).click();
    await hasCount(turns(page), 1);
    await hasAttribute(turns(page).last(), 'data-status', 'completed');
    await containsText(turns(page).last().locator('.answer'), 'This one fails first');
  });

  it('renders Markdown sanitised, shows function calls compactly, and is readable at desktop and phone width, light and dark', async () => {
    const { token } = await newSmith();
    const markdown = [
      '## Your May spending',
      '',
      'Travel came to **€412**, mostly the Oslo trip:',
      '',
      '- Train to Oslo: €180',
      '- Hotel, 2 nights: €232',
      '',
      '```ts',
      "const total = [180, 232].reduce((sum, amount) => sum + amount, 0);",
      '```',
      '',
      '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>',
    ].join('\n');
    stack.upstream.set({ reply: markdown });
    const page = await openConsole(token);
    await send(page, 'What did I spend on travel in May?');
    const answer = turns(page).last().locator('.answer');
    await isVisible(answer.getByRole('heading', { name: 'Your May spending' }));
    await hasCount(answer.getByRole('listitem'), 2);
    await containsText(answer.locator('pre code'), 'reduce');
    expect(await answer.locator('img, script').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();

    // A function call item from the Responses API, shown as one compact line that opens to its arguments.
    const client = stack.client(token);
    const conversationId = new URLSearchParams(new URL(page.url()).hash.slice(1)).get('conversation')!;
    stack.upstream.set({ reply: { toolCalls: [{ name: 'lookup_expenses', arguments: '{"month":"May"}' }] } });
    await client.responses.create({ model: '', conversation: conversationId, input: 'Look it up', tools: [{ type: 'function', name: 'lookup_expenses', parameters: { type: 'object', properties: { month: { type: 'string' } } }, strict: false }] });
    await page.reload();
    await hasText(page.getByRole('log', { name: 'Messages' }).locator('details.tool summary'), 'Called lookup_expenses');

    await isVisible(page.getByRole('heading', { name: 'Your May spending' }));
    mkdirSync(DOCS, { recursive: true });
    await page.screenshot({ path: path.join(DOCS, 'console-desktop.png') });

    const phone = await openConsole(token, { width: 390, height: 844 }, 'dark');
    await phone.goto(`${stack.origin}/console#conversation=${conversationId}`);
    await isVisible(phone.getByRole('heading', { name: 'Your May spending' }));
    // Nothing wider than the phone's screen but the code block, which scrolls on its own.
    expect(await phone.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    expect(await phone.evaluate(() => getComputedStyle(document.body).backgroundColor)).not.toBe('rgb(255, 255, 255)');
    await phone.screenshot({ path: path.join(DOCS, 'console-phone.png') });
    // DOMPurify parses the hostile <img onerror> in an inert document (at every render), which Chromium
    // reports against the page's CSP although nothing runs; those reports are expected here, no other is.
    const unexpected = pageErrors.splice(0).filter((message) => !/inline event handler/.test(message));
    pageErrors.push(...unexpected);
  });
});
