// The openai client every command talks to the service through: base URL and key from the flags,
// else from OPENAI_BASE_URL and OPENAI_API_KEY (read by commander), as the SDK itself reads them.
import OpenAI from 'openai';
import { UsageError } from './exit.js';

/** Where `npm start` listens. */
export const DEFAULT_BASE_URL = 'http://127.0.0.1:8080/v1';

export interface ConnectionOptions {
  baseUrl?: string;
  apiKey?: string;
}

export function baseUrlOf(options: ConnectionOptions): string {
  return options.baseUrl || DEFAULT_BASE_URL;
}

export function serviceClient(options: ConnectionOptions): OpenAI {
  const baseURL = baseUrlOf(options);
  try {
    new URL(baseURL);
  } catch {
    throw new UsageError(`--base-url ${JSON.stringify(baseURL)} is not a URL, e.g. ${DEFAULT_BASE_URL}`);
  }
  if (!options.apiKey) throw new UsageError('no API key: set OPENAI_API_KEY or pass --api-key');
  return new OpenAI({ baseURL, apiKey: options.apiKey, maxRetries: 2 });
}
