// The S3 BlobStore against moto_server with the SDK's default client (CRC32 checksums on every
// upload part, aws-chunked bodies), as it runs in AWS: the contract, and S3's multipart rules.
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { S3BlobStore } from '../../shared/adapters/aws/s3-blob-store.js';
import { MOTO_SERVER, motoSkipNotice, startMoto } from '../support/moto.js';
import { blobStoreContract } from './blob-store-contract.js';

if (!MOTO_SERVER) {
  motoSkipNotice('the S3 BlobStore contract');
} else {
  blobStoreContract('S3BlobStore on moto, with the SDK default checksums', async () => {
    const moto = await startMoto();
    const client = moto.s3();
    const bucket = `blobs-${process.pid}-${Date.now()}`;
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    // 5 MiB parts (the S3 minimum) so 12 MiB bodies take three parts.
    return {
      store: new S3BlobStore({ client, bucket, partBytes: 5 * 1024 * 1024 }),
      largeBytes: 12 * 1024 * 1024,
      close: moto.close,
      // S3 answers a presigned GET with the response-content-disposition it was signed with; moto
      // ignores it (s3rver honours it, and its suite checks the header).
      ignoresResponseHeaderOverrides: 'moto 5.2 does not implement response-content-* overrides',
    };
  });
}
