import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { validateMessage, isKnownType, type ValidateOptions } from '../../src/protocol/validate';
import { emptyMessage, MessageType, type Message } from '../../src/protocol/message';
import { ErrorCode } from '../../src/protocol/errors';
import type { ProtocolVersion } from '../../src/protocol/constants';

const msg = (m: Partial<Message>): Message => ({ ...emptyMessage(), ...m });
const v3service: ValidateOptions = { version: 3, from: 'service' };
const code = (m: Partial<Message>, o: ValidateOptions = v3service) => validateMessage(msg(m), o)?.code;

const v = suite('message validation');

v('well-formed messages of every V3 type pass', () => {
  assert.is(code({ type: MessageType.DATA, streamId: 1, payload: new Uint8Array(64512) }), undefined);
  assert.is(code({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'SSH1', connectionId: 1 }), undefined);
  assert.is(code({ type: MessageType.STREAM_RESET, streamId: 1 }), undefined);
  assert.is(code({ type: MessageType.SESSION_RESET }), undefined);
  assert.is(code({ type: MessageType.SERVICE_IDS, availableServiceIds: ['a'] }), undefined);
  assert.is(code({ type: MessageType.CONNECTION_START, streamId: 1, connectionId: 2 }), undefined);
  assert.is(code({ type: MessageType.CONNECTION_RESET, streamId: 1, connectionId: 2 }), undefined);
});

v('type 0 is invalid, ignorable or not', () => {
  assert.is(code({ type: 0 }), ErrorCode.BAD_TYPE);
  assert.is(code({ type: 0, ignorable: true }), ErrorCode.BAD_TYPE);
});

v('unknown type: invalid unless ignorable', () => {
  assert.is(code({ type: 42 }), ErrorCode.BAD_TYPE);
  assert.is(code({ type: 42, ignorable: true }), undefined);
  assert.is(code({ type: -3 }), ErrorCode.BAD_TYPE);
});

v('types newer than the negotiated version', () => {
  const table: Array<[ProtocolVersion, number, boolean]> = [
    [1, MessageType.SESSION_RESET, true], [1, MessageType.SERVICE_IDS, false], [1, MessageType.CONNECTION_START, false],
    [2, MessageType.SERVICE_IDS, true], [2, MessageType.CONNECTION_RESET, false], [3, MessageType.CONNECTION_RESET, true],
  ];
  for (const [version, type, known] of table) {
    assert.is(isKnownType(type, version), known, `V${version} type ${type}`);
    const c = code({ type, streamId: 1 }, { version, from: 'service' });
    assert.is(c, known ? undefined : ErrorCode.BAD_VERSION, `V${version} type ${type}`);
    assert.is(code({ type, streamId: 1, ignorable: true }, { version, from: 'service' }), undefined);
  }
});

v('stream messages need a stream id', () => {
  for (const type of [MessageType.DATA, MessageType.STREAM_START, MessageType.STREAM_RESET, MessageType.CONNECTION_START, MessageType.CONNECTION_RESET]) {
    assert.is(code({ type, streamId: 0 }), ErrorCode.NO_STREAM_ID);
  }
  assert.is(code({ type: MessageType.SESSION_RESET, streamId: 0 }), undefined);
});

v('payload limit, default 64512 and configurable', () => {
  assert.is(code({ type: 1, streamId: 1, payload: new Uint8Array(64513) }), ErrorCode.PAYLOAD_TOO_LARGE);
  assert.is(code({ type: 1, streamId: 1, payload: new Uint8Array(101) }, { ...v3service, maxPayloadBytes: 100 }), ErrorCode.PAYLOAD_TOO_LARGE);
});

v('SERVICE_IDS and SESSION_RESET only from the service', () => {
  const client: ValidateOptions = { version: 3, from: 'client' };
  assert.is(code({ type: MessageType.SERVICE_IDS }, client), ErrorCode.WRONG_SENDER);
  assert.is(code({ type: MessageType.SESSION_RESET }, client), ErrorCode.WRONG_SENDER);
  assert.is(code({ type: MessageType.DATA, streamId: 1 }, client), undefined);
});

v.run();
