import { Router } from 'express';
import type { Authenticator } from '@ic/auth';
import { authorize, parseOrThrow } from '@ic/http';
import {
  apiError,
  ConversationId,
  CreateConversationBody,
  ItemId,
  ListConversationsQuery,
  ListItemsQuery,
  RetrieveItemQuery,
  UpdateConversationBody,
} from '@ic/schemas';
import type { ConversationsService } from './conversations.service';

/** `metadata[topic]=demo&metadata[team]=x` → `{ metadata: { topic: 'demo', team: 'x' } }` (the query parser keeps brackets literal). */
function withMetadataFilter(query: Record<string, unknown>): Record<string, unknown> {
  const rest: Record<string, unknown> = {};
  const metadata: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(query)) {
    const match = /^metadata\[(.*)\]$/.exec(key);
    if (match) metadata[match[1]!] = value;
    else rest[key] = value;
  }
  return Object.keys(metadata).length > 0 ? { ...rest, metadata } : rest;
}

const conversationIdParam = (value: string | undefined) => parseOrThrow(ConversationId, value, 'conversation_id');

/** The Conversations API: route contracts (zod) in, service calls out. */
export function conversationsRouter(service: ConversationsService, authenticator: Authenticator): Router {
  const router = Router();

  router.post('/v1/conversations', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'conversations:write');
    const body = parseOrThrow(CreateConversationBody, req.body);
    res.json(await service.create(smith, body));
  });

  router.get('/v1/conversations', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'conversations:read');
    const query = parseOrThrow(ListConversationsQuery, withMetadataFilter(req.query as Record<string, unknown>));
    res.json(await service.list(smith, query));
  });

  router.get('/v1/conversations/:conversation_id', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'conversations:read');
    res.json(await service.get(smith, conversationIdParam(req.params.conversation_id)));
  });

  router.post('/v1/conversations/:conversation_id', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'conversations:write');
    const id = conversationIdParam(req.params.conversation_id);
    const body = parseOrThrow(UpdateConversationBody, req.body);
    res.json(await service.update(smith, id, body));
  });

  router.delete('/v1/conversations/:conversation_id', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'conversations:write');
    res.json(await service.delete(smith, conversationIdParam(req.params.conversation_id)));
  });

  router.get('/v1/conversations/:conversation_id/items', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'conversations:read');
    const id = conversationIdParam(req.params.conversation_id);
    const query = parseOrThrow(ListItemsQuery, req.query);
    res.json(await service.listItems(smith, id, query));
  });

  router.get('/v1/conversations/:conversation_id/items/:item_id', async (req, res) => {
    const { smith } = await authorize(authenticator, req, res, 'conversations:read');
    const id = conversationIdParam(req.params.conversation_id);
    parseOrThrow(RetrieveItemQuery, req.query);
    const itemId = parseOrThrow(ItemId, req.params.item_id, 'item_id');
    res.json(await service.getItem(smith, id, itemId));
  });

  const readOnly = () => {
    throw apiError('items_read_only');
  };
  router.post('/v1/conversations/:conversation_id/items', readOnly);
  router.delete('/v1/conversations/:conversation_id/items/:item_id', readOnly);

  return router;
}
