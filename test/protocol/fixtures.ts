import { MessageType, type MessageInit } from '../../src/protocol/message';

const ascii = (s: string) => Buffer.from(s, 'ascii').toString('hex');

/**
 * Golden vectors, worked out by hand from the protobuf wire rules: key = field << 3 | wire type
 * (08 type, 10 streamId, 18 ignorable, 22 payload, 2a serviceId, 32 availableServiceIds,
 * 38 connectionId), varints little-endian base 128, negative int32 as 10-byte two's complement.
 */
export const GOLDEN: Array<{ name: string; msg: MessageInit; hex: string }> = [
  { name: 'DATA with all V3 fields', msg: { type: MessageType.DATA, streamId: 1, payload: Buffer.from('hi'), serviceId: 'SSH1', connectionId: 1 },
    hex: `0801 1001 2202${ascii('hi')} 2a04${ascii('SSH1')} 3801` },
  { name: 'STREAM_START (V3, 12 bytes as the reference sends)', msg: { type: MessageType.STREAM_START, streamId: 1, serviceId: 'SSH1', connectionId: 1 },
    hex: `0802 1001 2a04${ascii('SSH1')} 3801` },
  { name: 'STREAM_START in V1 form (4 bytes)', msg: { type: MessageType.STREAM_START, streamId: 1 }, hex: '0802 1001' },
  { name: 'STREAM_RESET in V1 form', msg: { type: MessageType.STREAM_RESET, streamId: 4 }, hex: '0803 1004' },
  { name: 'SESSION_RESET', msg: { type: MessageType.SESSION_RESET }, hex: '0804' },
  { name: 'SERVICE_IDS with several ids', msg: { type: MessageType.SERVICE_IDS, availableServiceIds: ['SSH1', 'HTTP1', 'RDP'] },
    hex: `0805 3204${ascii('SSH1')} 3205${ascii('HTTP1')} 3203${ascii('RDP')}` },
  { name: 'SERVICE_IDS with an empty list', msg: { type: MessageType.SERVICE_IDS, availableServiceIds: [] }, hex: '0805' },
  { name: 'CONNECTION_START', msg: { type: MessageType.CONNECTION_START, streamId: 1, serviceId: 'SSH1', connectionId: 2 },
    hex: `0806 1001 2a04${ascii('SSH1')} 3802` },
  { name: 'CONNECTION_RESET with a two-byte connection id', msg: { type: MessageType.CONNECTION_RESET, streamId: 1, serviceId: 'SSH1', connectionId: 300 },
    hex: `0807 1001 2a04${ascii('SSH1')} 38ac02` },
  { name: 'negative stream id is a 10-byte varint', msg: { type: MessageType.DATA, streamId: -1 }, hex: '0801 10ffffffffffffffffff01' },
  { name: 'INT32_MIN stream id', msg: { type: MessageType.DATA, streamId: -2147483648 }, hex: '0801 1080808080f8ffffffff01' },
  { name: 'INT32_MAX stream id', msg: { type: MessageType.STREAM_START, streamId: 2147483647 }, hex: '0802 10ffffffff07' },
  { name: 'connection id 0 is not written', msg: { type: MessageType.DATA, streamId: 7, connectionId: 0 }, hex: '0801 1007' },
  { name: 'largest connection id (uint32 max)', msg: { type: MessageType.DATA, streamId: 1, connectionId: 0xffffffff }, hex: '0801 1001 38ffffffff0f' },
  { name: 'connection id 128 needs two bytes', msg: { type: MessageType.DATA, streamId: 1, connectionId: 128 }, hex: '0801 1001 388001' },
  { name: 'empty payload is not written', msg: { type: MessageType.DATA, streamId: 1, payload: new Uint8Array(0) }, hex: '0801 1001' },
  { name: 'ignorable unknown type', msg: { type: 42, ignorable: true }, hex: '082a 1801' },
  { name: 'all defaults encode to nothing', msg: { type: 0 }, hex: '' },
];
