// The filename rules (shared/filenames.ts) and the one Content-Disposition builder that local
// downloads and S3's presigned URLs share.
import { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { S3BlobStore } from '../../../shared/adapters/aws/s3-blob-store.js';
import { attachmentDisposition, filenameProblem } from '../../../shared/filenames.js';

describe('filenames', () => {
  it('accepts any script, and refuses control characters, line separators, lone surrogates and 1025+ characters', () => {
    for (const fine of ['a.jsonl', '评测数据.jsonl', 'emoji-🎉.jsonl', 'ünïcödé.jsonl', 'a "b" \\c.jsonl', 'x'.repeat(1024)]) {
      expect(filenameProblem(fine), fine).toBeUndefined();
    }
    for (const refused of [
      'a\u0000',
      'a\u0001',
      'a\n',
      'a\r',
      'a\t',
      'a\u001f',
      'a\u007f',
      'a\u0080',
      'a\u009f',
      'a\u2028',
      'a\u2029',
      'a\ud800',
      'a\udc00b',
      'x'.repeat(1025),
    ]) {
      expect(filenameProblem(refused), JSON.stringify(refused)).toBeDefined();
    }
  });

  it('writes an ASCII filename plus filename*=UTF-8 for other names, never a byte outside printable ASCII', () => {
    expect(attachmentDisposition('a.jsonl')).toBe('attachment; filename=a.jsonl');
    expect(attachmentDisposition('评测.jsonl')).toBe(`attachment; filename="??.jsonl"; filename*=UTF-8''%E8%AF%84%E6%B5%8B.jsonl`);
    expect(attachmentDisposition('a "b".jsonl')).toBe('attachment; filename="a \\"b\\".jsonl"');
    // Names stored before the rules (a control character, a lone surrogate) still make a valid header.
    for (const old of ['a\u0001b', 'a\r\nb', 'a\ud800b', 'a\u2028b'])
      expect(attachmentDisposition(old)).toMatch(/^attachment; [\x20-\x7e]+$/);
  });

  it('puts the same header in the presigned S3 URL', async () => {
    const store = new S3BlobStore({
      client: new S3Client({ region: 'us-east-1', credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' } }),
      bucket: 'bucket',
    });
    for (const filename of ['评测数据.jsonl', 'plain.jsonl', 'a "quoted" name.jsonl']) {
      const url = new URL(await store.presignGet('files/file-x', { expiresInSeconds: 60, filename }));
      expect(url.searchParams.get('response-content-disposition')).toBe(attachmentDisposition(filename));
    }
  });
});
