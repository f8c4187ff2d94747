// The worker's reader of its chunk: the request lines in the chunk's byte range of the input file,
// through the request-line model. The file was validated before it was planned, so every
// non-blank line in the range is a well-formed request.
import type { ChunkPlanEntry } from '../batch/model.js';
import type { BlobStore } from '../ports.js';
import { readJsonlLines } from './jsonl.js';
import { isBlankLine, normalizeEndpoint, parseRequestLine } from './request-line.js';

export interface ChunkRequest {
  customId: string;
  /** The line's url, normalized (/v4 → /v1). */
  url: string;
  body: Record<string, unknown>;
}

/** The request lines of one chunk, read by byte range. */
export async function readChunkRequests(blobs: BlobStore, inputBlobKey: string, chunk: ChunkPlanEntry): Promise<ChunkRequest[]> {
  const requests: ChunkRequest[] = [];
  const source = await blobs.get(inputBlobKey, { start: chunk.start, end: chunk.end });
  for await (const line of readJsonlLines(source, { offset: chunk.start })) {
    if (isBlankLine(line.bytes)) continue;
    const parsed = parseRequestLine(line.bytes);
    if (!parsed.ok) throw new Error(`chunk ${chunk.index}: line at byte ${line.start} is not a valid request`);
    const { custom_id, url, body } = parsed.request;
    requests.push({ customId: custom_id, url: normalizeEndpoint(url), body });
  }
  if (requests.length !== chunk.requests) {
    throw new Error(
      `chunk ${chunk.index}: expected ${chunk.requests} requests in bytes ${chunk.start}..${chunk.end}, read ${requests.length}`,
    );
  }
  return requests;
}
