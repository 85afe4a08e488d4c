/**
 * The resume/1 extension's messages: payload layouts, short and long payloads, the ACK that
 * CREDIT_WINDOW carries under resume/1, and that they are plain ignorable tunnel messages.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeWindow, encodeWindow, extensionOf, ExtensionType, RESUME_EXTENSION } from '../../src/protocol/extension';
import { encodeFrame } from '../../src/protocol/framing';
import { decodeMessage, typeName } from '../../src/protocol/message';
import { decodeResume, decodeResumeHello, encodeResume, encodeResumeHello } from '../../src/protocol/resume';
import { validateMessage } from '../../src/protocol/validate';

const resume = suite('protocol extension resume/1');
const INSTANCE = '00112233445566778899aabbccddeeff';

resume('RESUME_HELLO: version 1, a 16-byte instance, grace and count, exactly 25 bytes', () => {
  const payload = encodeResumeHello({ instance: INSTANCE, graceMs: 60_000, count: 3 });
  assert.is(payload.length, 25);
  assert.equal([...payload.subarray(0, 17)], [1, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
  assert.equal([...payload.subarray(17)], [0, 0, 0xea, 0x60, 0, 0, 0, 3]);
  assert.equal(decodeResumeHello(payload), { version: 1, instance: INSTANCE, graceMs: 60_000, count: 3 });
});

resume('RESUME_HELLO: trailing bytes ignored; short payloads and version 0 are malformed; values clamped to 32 bits', () => {
  const longer = Buffer.concat([encodeResumeHello({ instance: INSTANCE, graceMs: 1, count: 0 }), Buffer.from([9, 9])]);
  assert.equal(decodeResumeHello(longer), { version: 1, instance: INSTANCE, graceMs: 1, count: 0 });
  assert.is(decodeResumeHello(longer.subarray(0, 24)), undefined);
  const zero = Buffer.from(longer);
  zero[0] = 0;
  assert.is(decodeResumeHello(zero), undefined);
  assert.is(decodeResumeHello(encodeResumeHello({ instance: INSTANCE, graceMs: 2 ** 40, count: -1 }))!.graceMs, 0xffffffff);
});

resume('RESUME: received and sent as big-endian 64-bit counts and a CLOSED flag, 17 bytes', () => {
  const payload = encodeResume({ received: 0x0102030405, sent: 7, closed: true });
  assert.equal([...payload], [0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 7, 1]);
  assert.equal(decodeResume(payload), { received: 0x0102030405, sent: 7, closed: true });
  assert.equal(decodeResume(encodeResume({ received: 0, sent: 0, closed: false })), { received: 0, sent: 0, closed: false });
});

resume('RESUME: unknown flag bits and trailing bytes ignored, counts past 2^53 clamped, short is malformed', () => {
  const odd = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 1, 0, 0xfe, 5]);
  assert.equal(decodeResume(odd), { received: Number.MAX_SAFE_INTEGER, sent: 256, closed: false });
  assert.is(decodeResume(odd.subarray(0, 16)), undefined);
});

resume('CREDIT_WINDOW under resume/1 carries `received` after the flags; without those 8 bytes there is none', () => {
  const payload = encodeWindow({ limit: 300, ack: true, received: 0x10000 });
  assert.equal([...payload], [0, 0, 0, 0, 0, 0, 1, 44, 1, 0, 0, 0, 0, 0, 1, 0, 0]);
  assert.equal(decodeWindow(payload), { limit: 300, ack: true, received: 0x10000 });
  assert.equal(decodeWindow(payload.subarray(0, 16)), { limit: 300, ack: true });
  assert.is(encodeWindow({ limit: 300, ack: false }).length, 9, 'credit/1 alone keeps its 9 bytes');
});

resume('types: named, belonging to resume/1, valid only as ignorable messages of the schema', () => {
  assert.is(ExtensionType.RESUME_HELLO, 0x4c52);
  assert.is(ExtensionType.RESUME, 0x4c53);
  assert.is(extensionOf(ExtensionType.RESUME_HELLO), RESUME_EXTENSION);
  assert.is(extensionOf(ExtensionType.RESUME), RESUME_EXTENSION);
  assert.is(typeName(ExtensionType.RESUME_HELLO), 'RESUME_HELLO');
  assert.is(typeName(ExtensionType.RESUME), 'RESUME');
  const msg = decodeMessage(encodeFrame({ type: ExtensionType.RESUME, ignorable: true, serviceId: 'SSH', streamId: 1, connectionId: 2, payload: encodeResume({ received: 1, sent: 2, closed: false }) }).subarray(2));
  assert.is(validateMessage(msg, { version: 3, from: 'client' }), undefined);
  assert.equal(decodeResume(msg.payload), { received: 1, sent: 2, closed: false });
});

resume.run();
