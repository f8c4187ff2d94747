import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsBlobStore } from '../../shared/adapters/local/fs-blob-store.js';
import { blobStoreContract } from './blob-store-contract.js';

blobStoreContract('FsBlobStore', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fs-blobs-'));
  return {
    store: new FsBlobStore(root),
    largeBytes: 12 * 1024 * 1024,
    close: () => rm(root, { recursive: true, force: true }),
  };
});
