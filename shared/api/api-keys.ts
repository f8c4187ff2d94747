// API keys kept in the MetaStore (AWS): only the SHA-256 of a key is stored, under which its
// project and revocation live. The key itself is shown once, when it is made, and never stored.
import { createHash } from 'node:crypto';
import type { ApiKeyRecord } from '../batch/model.js';
import { randomToken } from '../ids.js';
import type { Clock, MetaStore } from '../ports.js';
import { SIGNED_API_KEY_SHAPE } from './signed-tokens.js';

export const API_KEY_PREFIX = 'sk-batch-';
const API_KEY_RANDOM_CHARACTERS = 40;
/** Every stored key has this shape (newApiKey): anything else is refused without a lookup. */
const API_KEY_SHAPE = new RegExp(`^${API_KEY_PREFIX}[A-Za-z0-9]{${API_KEY_RANDOM_CHARACTERS}}$`);
/** How much of a key listings show: the fixed prefix and six random characters. */
const SHOWN_CHARACTERS = API_KEY_PREFIX.length + 6;

/** Looks up the project of a bearer key; undefined for an unknown or revoked key. */
export type ApiKeyResolver = (key: string) => Promise<string | undefined>;

export function newApiKey(): string {
  return API_KEY_PREFIX + randomToken(API_KEY_RANDOM_CHARACTERS);
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
  /**
   * How long an unknown key is remembered as unknown, so guessing does not hammer the store. A new
   * key is random, so no client can have been refused it before it was made: a long miss costs only memory.
   */
  missTtlMs?: number;
  /** Entries of each cache (found keys, unknown keys): a flood of unknown keys never evicts a found one. */
  maxEntries?: number;
}

export const DEFAULT_HIT_TTL_MS = 60_000;
export const DEFAULT_MISS_TTL_MS = 30_000;

/** Resolves keys against the MetaStore, remembering answers briefly (per process, or Lambda container). */
export function storedApiKeys(meta: Pick<MetaStore, 'getApiKey'>, options: StoredKeyOptions): ApiKeyResolver {
  const hitTtlMs = options.hitTtlMs ?? DEFAULT_HIT_TTL_MS;
  const missTtlMs = options.missTtlMs ?? DEFAULT_MISS_TTL_MS;
  const maxEntries = options.maxEntries ?? 10_000;
  const found = new Map<string, { project: string; untilMs: number }>();
  const unknown = new Map<string, number>();
  const remember = <V>(cache: Map<string, V>, hash: string, value: V) => {
    cache.delete(hash);
    if (cache.size >= maxEntries) cache.delete(cache.keys().next().value!);
    cache.set(hash, value);
  };
  return async (key) => {
    // Not one of ours whatever the table holds: no lookup, no cache entry.
    if (!API_KEY_SHAPE.test(key) && !SIGNED_API_KEY_SHAPE.test(key)) return undefined;
    const hash = hashApiKey(key);
    const now = options.clock.now();
    const hit = found.get(hash);
    if (hit && hit.untilMs > now) return hit.project;
    if ((unknown.get(hash) ?? 0) > now) return undefined;
    const record = await meta.getApiKey(hash);
    const project = record && record.revokedAtMs === null ? record.project : undefined;
    if (project) {
      unknown.delete(hash);
      remember(found, hash, { project, untilMs: now + hitTtlMs });
    } else {
      found.delete(hash);
      remember(unknown, hash, now + missTtlMs);
    }
    return project;
  };
}
