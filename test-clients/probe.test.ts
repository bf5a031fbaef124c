import { Agent } from '@openai/agents';
import { ChatOpenAI } from '@langchain/openai';
it('loads', async () => {
  const { generateText } = await import('ai');
  const { createOpenAI } = await import('@ai-sdk/openai');
  expect(typeof generateText).toBe('function');
  expect(typeof createOpenAI).toBe('function');
  expect(typeof Agent).toBe('function');
  expect(typeof ChatOpenAI).toBe('function');
});
