import DOMPurify from 'dompurify';
import { Marked } from 'marked';

// GitHub-flavoured Markdown; raw HTML in the model's text survives parsing and is then removed by
// DOMPurify, so nothing the model writes can run script in the page.
const markdown = new Marked({ gfm: true, breaks: true, async: false });

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  // Links open outside the console and never hand it the opener.
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

/** Model text → sanitised HTML. */
export function renderMarkdown(text: string): string {
  const html = markdown.parse(text) as string;
  return DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ['style', 'form', 'input', 'button', 'img'] });
}
