/** A verification worker: checks the stretches of a chain verify.ts hands it (segment.ts). */
import { parentPort } from 'node:worker_threads';
import { checkSegment, type SegmentTask } from './segment.ts';

parentPort?.on('message', (message: { id: number; task: SegmentTask }) => {
  parentPort?.postMessage({ id: message.id, result: checkSegment(message.task) });
});
