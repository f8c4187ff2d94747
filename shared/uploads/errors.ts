// What the Uploads domain refuses, as errors that carry what the refusal is about (the upload as it
// is now, the limit it would pass). The HTTP layer (shared/api/uploads.ts) gives each its status
// and code; the messages are written for the client.
import type { UploadRecord } from '../batch/model.js';
import type { UploadProblem } from '../input/upload-check.js';

/** Every refusal of the Uploads domain: the client's doing, never a failure of the service. */
export class UploadRefusal extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The upload is not pending (completed, cancelled or expired): `doing` cannot be done. */
export class UploadNotPending extends UploadRefusal {
  constructor(
    readonly upload: UploadRecord,
    doing: string,
  ) {
    const when =
      upload.status === 'expired'
        ? `expired at ${new Date(upload.expiresAtMs).toISOString()} (an upload lasts an hour)`
        : `already ${upload.status}`;
    super(`Upload ${upload.id} is ${when}: ${doing}.`);
  }
}

/** An upload announces no bytes, or more than a file may hold. */
export class UploadSizeRefused extends UploadRefusal {
  constructor(
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(
      bytes === 0
        ? 'bytes is 0: a batch input file needs at least one request.'
        : `The upload announces ${bytes} bytes; this service accepts files of at most ${limit} bytes (MAX_FILE_BYTES).`,
    );
  }
}

/** A part would take the parts past what the upload may hold. */
export class UploadOverAnnounced extends UploadRefusal {
  constructor(
    readonly upload: UploadRecord,
    readonly limit: number,
  ) {
    const what =
      limit < upload.bytes
        ? `the ${limit} bytes this service accepts for a file (MAX_FILE_BYTES)`
        : `the ${upload.bytes} bytes the upload was created for`;
    super(`This part would take the parts of upload ${upload.id} past ${what}.`);
  }
}

/** A part over MAX_PART_BYTES. */
export class UploadPartTooLarge extends UploadRefusal {
  constructor(readonly maxBytes: number) {
    super(`A part may be at most ${maxBytes} bytes (64 MB); split the file into more parts.`);
  }
}

export class UploadPartEmpty extends UploadRefusal {
  constructor() {
    super('The part is empty.');
  }
}

/** Complete names a part twice, or one the upload does not have. */
export class UploadPartsRefused extends UploadRefusal {}

/** The parts do not add up to the bytes the upload announced. */
export class UploadSizeMismatch extends UploadRefusal {
  constructor(
    readonly upload: UploadRecord,
    readonly bytes: number,
    how: 'add up to' | 'hold',
  ) {
    super(`The parts ${how} ${bytes} bytes, but the upload was created for ${upload.bytes} bytes.`);
  }
}

export class UploadMd5Mismatch extends UploadRefusal {
  constructor(
    readonly digest: string,
    readonly expected: string,
  ) {
    super(`The md5 of the joined parts is ${digest}, not ${expected}.`);
  }
}

/** The joined parts are not a batch input file. */
export class UploadFileRefused extends UploadRefusal {
  constructor(readonly problem: UploadProblem) {
    super(problem.message);
  }
}

/** Another complete is still joining the parts (for longer than this one may wait): a retry will find it done. */
export class UploadStillCompleting extends UploadRefusal {
  constructor(readonly upload: UploadRecord) {
    super(
      `Upload ${upload.id} is still being assembled from its parts by an earlier complete request; repeat the request to get the completed upload.`,
    );
  }
}
