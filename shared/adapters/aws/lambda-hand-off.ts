// Work a request hands over when it reaches its deadline, run by an asynchronous invocation of the
// same function (InvocationType Event: Lambda queues it and answers at once), which then has the
// function's whole timeout for it: the API Lambda's answer must come before API Gateway's 30 s, its
// work need not. The event is ApiHandOffEvent (functions/contract.ts).
import { InvokeCommand, type LambdaClient } from '@aws-sdk/client-lambda';
import type { CompleteHandOff } from '../../uploads/model.js';

export const UPLOAD_COMPLETE_HAND_OFF = 'upload-complete';

export class LambdaHandOff {
  constructor(private readonly options: { client: LambdaClient; functionName: string }) {}

  async handOffComplete(job: CompleteHandOff): Promise<void> {
    await this.options.client.send(
      new InvokeCommand({
        FunctionName: this.options.functionName,
        InvocationType: 'Event',
        Payload: Buffer.from(JSON.stringify({ handOff: UPLOAD_COMPLETE_HAND_OFF, job })),
      }),
    );
  }
}
