import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeMessage, encodeMessage, MessageType, type Message, type MessageInit } from '../../src/protocol/message';
import { ErrorCode, TunnelError } from '../../src/protocol/errors';
import { GOLDEN } from './fixtures';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const ascii = (s: string) => Buffer.from(s, 'ascii').toString('hex');


const full = (m: MessageInit): Message => ({
  type: m.type, streamId: m.streamId ?? 0, ignorable: m.ignorable ?? false, payload: m.payload ?? new Uint8Array(0),
  serviceId: m.serviceId ?? '', availableServiceIds: m.availableServiceIds ?? [], connectionId: m.connectionId ?? 0,
});

function assertSame(actual: Message, expected: Message) {
  assert.equal({ ...actual, payload: toHex(actual.payload) }, { ...expected, payload: toHex(expected.payload) });
}

const golden = suite('message golden vectors');

for (const g of GOLDEN) {
  golden(`encodes ${g.name}`, () => {
    assert.is(toHex(encodeMessage(g.msg)), g.hex.replace(/\s+/g, ''));
  });
  golden(`decodes ${g.name}`, () => {
    assertSame(decodeMessage(hex(g.hex)), full(g.msg));
  });
}

golden('64512-byte payload: length varint 80 f8 03', () => {
  const payload = new Uint8Array(64512).map((_, i) => i & 0xff);
  const bytes = encodeMessage({ type: MessageType.DATA, streamId: 1, payload, serviceId: 'SSH1', connectionId: 1 });
  assert.is(bytes.length, 2 + 2 + 4 + 64512 + 6 + 2);
  assert.is(toHex(bytes.subarray(0, 8)), '0801100122' + '80f803');
  assert.is(toHex(bytes.subarray(8 + 64512)), `2a04${ascii('SSH1')}3801`);
  const back = decodeMessage(bytes);
  assert.is(back.payload.length, 64512);
  assert.is(Buffer.compare(Buffer.from(back.payload), Buffer.from(payload)), 0);
});

golden('payload is a view into the received buffer, not a copy', () => {
  const bytes = hex(`0801 1001 2203 616263`);
  const msg = decodeMessage(bytes);
  assert.is(msg.payload.buffer, bytes.buffer);
  assert.is(msg.payload.byteOffset, bytes.byteOffset + 6);
});

golden('non-ASCII service id round-trips as UTF-8', () => {
  const msg = { type: MessageType.DATA, streamId: 1, serviceId: 'dienst-ü-✓' };
  assertSame(decodeMessage(encodeMessage(msg)), full(msg));
  assert.is(toHex(encodeMessage(msg)).slice(8, 12), '2a0d'); // 7 + 2 (ü) + 1 + 3 (✓) bytes
});

const unknown = suite('message unknown fields');

unknown('skips unknown fields of every wire type', () => {
  // field 8 varint, field 9 fixed64, field 10 bytes, field 11 fixed32, then type = DATA.
  const bytes = hex('4096 01  49 0102030405060708  5202 abcd  5d 01020304  0801  1003');
  assertSame(decodeMessage(bytes), full({ type: MessageType.DATA, streamId: 3 }));
});

unknown('a field repeated keeps the last value (proto3 merge) and appends repeated ones', () => {
  const bytes = hex(`0801 0802 3201${ascii('a')} 3201${ascii('b')}`);
  const msg = decodeMessage(bytes);
  assert.is(msg.type, 2);
  assert.equal(msg.availableServiceIds, ['a', 'b']);
});

const errors = suite('message errors');

const BAD: Array<{ name: string; hex: string; code: string }> = [
  { name: 'truncated varint', hex: '08', code: ErrorCode.TRUNCATED },
  { name: 'varint continuation at end', hex: '0880', code: ErrorCode.TRUNCATED },
  { name: 'varint longer than 10 bytes', hex: '10 ffffffffffffffffffff01', code: ErrorCode.TRUNCATED },
  { name: 'key varint truncated', hex: '80', code: ErrorCode.TRUNCATED },
  { name: 'type with wire type 2', hex: '0a01 00', code: ErrorCode.WIRE_TYPE },
  { name: 'payload with wire type 0', hex: '2001', code: ErrorCode.WIRE_TYPE },
  { name: 'start-group wire type', hex: '0b', code: ErrorCode.WIRE_TYPE },
  { name: 'end-group wire type on an unknown field', hex: '4c', code: ErrorCode.WIRE_TYPE },
  { name: 'wire type 6 does not exist', hex: '46', code: ErrorCode.WIRE_TYPE },
  { name: 'field number 0', hex: '0001', code: ErrorCode.WIRE_TYPE },
  { name: 'payload length past the end', hex: '2205 6162', code: ErrorCode.TRUNCATED },
  { name: 'unknown fixed64 past the end', hex: '49 010203', code: ErrorCode.TRUNCATED },
  { name: 'unknown fixed32 past the end', hex: '5d 01', code: ErrorCode.TRUNCATED },
  { name: 'stream id beyond int32', hex: '10 8080808010', code: ErrorCode.FIELD_RANGE },
  { name: 'connection id beyond uint32', hex: '38 8080808010', code: ErrorCode.FIELD_RANGE },
  { name: 'service id not UTF-8', hex: '2a01 ff', code: ErrorCode.BAD_UTF8 },
  { name: 'available service id not UTF-8', hex: '3202 c328', code: ErrorCode.BAD_UTF8 },
];

for (const b of BAD) {
  errors(`${b.name} → ${b.code}`, () => {
    try {
      decodeMessage(hex(b.hex));
      assert.unreachable('decoded');
    } catch (err) {
      assert.instance(err, TunnelError);
      assert.is((err as TunnelError).code, b.code);
    }
  });
}

const roundtrip = suite('message round trips over edge values');

const INT32_EDGES = [1, 127, 128, 16383, 16384, 2 ** 21, 2 ** 28, 2 ** 31 - 1, -1, -128, -(2 ** 31)];
const UINT32_EDGES = [1, 127, 128, 255, 256, 2 ** 21 - 1, 2 ** 28, 2 ** 31, 2 ** 32 - 1];

roundtrip('stream ids and connection ids at their edges', () => {
  for (const streamId of INT32_EDGES) {
    for (const connectionId of UINT32_EDGES) {
      const msg = { type: MessageType.CONNECTION_RESET, streamId, connectionId, serviceId: 'S' };
      assertSame(decodeMessage(encodeMessage(msg)), full(msg));
    }
  }
});

roundtrip('every type, with and without ignorable', () => {
  for (let type = 0; type <= 9; type++) {
    for (const ignorable of [false, true]) {
      const msg = { type, ignorable, streamId: 5 };
      assertSame(decodeMessage(encodeMessage(msg)), full(msg));
    }
  }
});

roundtrip('payload sizes 1, 127, 128, 16384 and 64512', () => {
  for (const n of [1, 127, 128, 16384, 64512]) {
    const msg = { type: MessageType.DATA, streamId: 1, payload: new Uint8Array(n).fill(n & 0xff) };
    assertSame(decodeMessage(encodeMessage(msg)), full(msg));
  }
});

golden.run();
unknown.run();
errors.run();
roundtrip.run();
