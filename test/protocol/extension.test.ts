/**
 * The credit/1 extension's messages (issue 14): payload layouts, what a receiver does with
 * short, long or odd payloads, the handshake header, and that the messages are plain tunnel
 * messages of the schema (ignorable, unknown to the protocol versions).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CREDIT_EXTENSION, decodeHello, decodeWindow, encodeHello, encodeWindow, extensionOf, ExtensionType, parseExtensions,
} from '../../src/protocol/extension';
import { encodeFrame } from '../../src/protocol/framing';
import { decodeMessage, typeName, type Message, type MessageInit } from '../../src/protocol/message';
import { validateMessage } from '../../src/protocol/validate';

const ext = suite('protocol extension credit/1');

/** A message as a receiver decodes it from the wire (frame without its 2-byte length). */
function wire(msg: MessageInit): Message {
  return decodeMessage(encodeFrame(msg).subarray(2));
}

ext('HELLO: version 1 and an 8-byte nonce, exactly 9 bytes', () => {
  const payload = encodeHello('0123456789abcdef');
  assert.equal([...payload], [1, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
  assert.equal(decodeHello(payload), { version: 1, nonce: '0123456789abcdef' });
});

ext('HELLO: bytes after the nonce are ignored (later versions may add some); short payloads and version 0 are malformed', () => {
  const longer = new Uint8Array([2, 1, 2, 3, 4, 5, 6, 7, 8, 99, 99]);
  assert.equal(decodeHello(longer), { version: 2, nonce: '0102030405060708' });
  assert.is(decodeHello(new Uint8Array(8)), undefined);
  assert.is(decodeHello(new Uint8Array(0)), undefined);
  assert.is(decodeHello(new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 8])), undefined);
});

ext('WINDOW: a big-endian 64-bit limit and a flags byte (bit 0 = ACK)', () => {
  const payload = encodeWindow({ limit: 0x0102030405, ack: true });
  assert.equal([...payload], [0, 0, 0, 1, 2, 3, 4, 5, 1]);
  assert.equal(decodeWindow(payload), { limit: 0x0102030405, ack: true });
  assert.equal(decodeWindow(encodeWindow({ limit: 262144, ack: false })), { limit: 262144, ack: false });
});

ext('WINDOW: no flags byte means no flags; unknown flag bits and trailing bytes are ignored; limits past 2^53 are clamped; short is malformed', () => {
  assert.equal(decodeWindow(new Uint8Array([0, 0, 0, 0, 0, 0, 1, 0])), { limit: 256, ack: false });
  assert.equal(decodeWindow(new Uint8Array([0, 0, 0, 0, 0, 0, 1, 0, 0xfe, 7, 7])), { limit: 256, ack: false });
  assert.equal(decodeWindow(new Uint8Array([0, 0, 0, 0, 0, 0, 1, 0, 0xff])), { limit: 256, ack: true });
  assert.equal(decodeWindow(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])), { limit: Number.MAX_SAFE_INTEGER, ack: false });
  assert.is(decodeWindow(new Uint8Array(7)), undefined);
});

ext('the handshake header: a comma-separated list, case and spaces aside, duplicates dropped', () => {
  assert.equal(parseExtensions('credit/1'), [CREDIT_EXTENSION]);
  assert.equal(parseExtensions(' Credit/1 , other/2,credit/1,, '), ['credit/1', 'other/2']);
  assert.equal(parseExtensions(['a/1', 'credit/1']), ['a/1', 'credit/1']);
  assert.equal(parseExtensions(undefined), []);
  assert.equal(parseExtensions('x'.repeat(65)), [], 'absurdly long names are not names');
});

ext('types: far above the protocol\'s, named, belonging to credit/1; valid only as ignorable messages', () => {
  assert.is(ExtensionType.CREDIT_HELLO, 19536);
  assert.is(ExtensionType.CREDIT_WINDOW, 19537);
  assert.is(typeName(ExtensionType.CREDIT_HELLO), 'CREDIT_HELLO');
  assert.is(typeName(ExtensionType.CREDIT_WINDOW), 'CREDIT_WINDOW');
  assert.is(extensionOf(ExtensionType.CREDIT_WINDOW), CREDIT_EXTENSION);
  assert.is(extensionOf(42), undefined);
  for (const version of [1, 2, 3] as const) {
    for (const from of ['service', 'client'] as const) {
      const window = wire({ type: ExtensionType.CREDIT_WINDOW, ignorable: true, serviceId: 'SSH', streamId: 1, connectionId: 1, payload: encodeWindow({ limit: 1, ack: false }) });
      assert.is(validateMessage(window, { version, from }), undefined, `V${version} from ${from}: a valid message`);
      const hello = wire({ type: ExtensionType.CREDIT_HELLO, ignorable: true, serviceId: 'SSH', payload: encodeHello('0011223344556677') });
      assert.is(validateMessage(hello, { version, from }), undefined);
      assert.ok(validateMessage({ ...hello, ignorable: false }, { version, from }), 'not ignorable: invalid');
    }
  }
});

ext.run();
