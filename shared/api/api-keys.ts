// API keys kept in the MetaStore (AWS): only the SHA-256 of a key is stored, under which its
// project and revocation live. The key itself is shown once, when it is made, and never stored.
import { createHash } from 'node:crypto';
import type { ApiKeyRecord } from '../batch/model.js';
import { randomToken } from '../ids.js';
import type { Clock, MetaStore } from '../ports.js';

export const API_KEY_PREFIX = 'sk-batch-';
/** How much of a key listings show: the fixed prefix and six random characters. */
const SHOWN_CHARACTERS = API_KEY_PREFIX.length + 6;

/** Looks up the project of a bearer key; undefined for an unknown or revoked key. */
export type ApiKeyResolver = (key: string) => Promise<string | undefined>;

export function newApiKey(): string {
  return API_KEY_PREFIX + randomToken(40);
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function apiKeyRecord(key: string, project: string, nowMs: number): ApiKeyRecord {
  return { keyHash: hashApiKey(key), project, prefix: key.slice(0, SHOWN_CHARACTERS), createdAtMs: nowMs, revokedAtMs: null };
}

export interface StoredKeyOptions {
  clock: Pick<Clock, 'now'>;
  /** How long a found key is trusted without asking the store again: a revocation takes this long to bite. */
  hitTtlMs?: number;
  /** How long an unknown key is remembered as unknown, so guessing does not hammer the store. */
  missTtlMs?: number;
  maxEntries?: number;
}

/** Resolves keys against the MetaStore, remembering answers briefly (per process, or Lambda container). */
export function storedApiKeys(meta: Pick<MetaStore, 'getApiKey'>, options: StoredKeyOptions): ApiKeyResolver {
  const hitTtlMs = options.hitTtlMs ?? 60_000;
  const missTtlMs = options.missTtlMs ?? 5_000;
  const maxEntries = options.maxEntries ?? 10_000;
  const cache = new Map<string, { project: string | undefined; untilMs: number }>();
  return async (key) => {
    const hash = hashApiKey(key);
    const now = options.clock.now();
    const cached = cache.get(hash);
    if (cached && cached.untilMs > now) return cached.project;
    const record = await meta.getApiKey(hash);
    const project = record && record.revokedAtMs === null ? record.project : undefined;
    if (cache.size >= maxEntries) cache.delete(cache.keys().next().value!);
    cache.delete(hash);
    cache.set(hash, { project, untilMs: now + (project ? hitTtlMs : missTtlMs) });
    return project;
  };
}
