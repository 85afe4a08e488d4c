/**
 * The tunnel `Message` (proto/Message.proto), read and written by hand over pbf.
 *
 * pbf does no bounds checking: reading past the end of a buffer yields garbage
 * instead of an error. Every read here is therefore preceded by a check that the
 * bytes exist within `end`, and every failure is a TunnelError with a stable code.
 */
import { PbfReader, PbfWriter } from 'pbf';
import { ErrorCode, TunnelError } from './errors';
import { extensionTypeName } from './extension';

export const MessageType = {
  UNKNOWN: 0,
  DATA: 1,
  STREAM_START: 2,
  STREAM_RESET: 3,
  SESSION_RESET: 4,
  SERVICE_IDS: 5,
  CONNECTION_START: 6,
  CONNECTION_RESET: 7,
} as const;

const TYPE_NAMES = ['UNKNOWN', 'DATA', 'STREAM_START', 'STREAM_RESET', 'SESSION_RESET', 'SERVICE_IDS', 'CONNECTION_START', 'CONNECTION_RESET'];

/** `DATA`, `STREAM_START`, … an extension's type (`CREDIT_WINDOW`), or `TYPE_42` for a type nobody defines. */
export function typeName(type: number): string {
  return TYPE_NAMES[type] ?? extensionTypeName(type) ?? `TYPE_${type}`;
}

export interface Message {
  /** A MessageType value; any int32 may arrive from the network. */
  type: number;
  /** int32; 0 means "not set". */
  streamId: number;
  ignorable: boolean;
  /** A view into the received buffer, never a copy. */
  payload: Uint8Array;
  /** "" means "not set" (V1). */
  serviceId: string;
  availableServiceIds: string[];
  /** uint32; 0 means "not set" (V1/V2). */
  connectionId: number;
}

/** What a sender fills in; absent fields take their proto3 defaults. */
export type MessageInit = Partial<Message> & { type: number };

// Field numbers, as in proto/Message.proto.
const F_TYPE = 1;
const F_STREAM_ID = 2;
const F_IGNORABLE = 3;
const F_PAYLOAD = 4;
const F_SERVICE_ID = 5;
const F_AVAILABLE_SERVICE_IDS = 6;
const F_CONNECTION_ID = 7;

// Protobuf wire types.
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder('utf-8', { fatal: true });

export function emptyMessage(): Message {
  return { type: 0, streamId: 0, ignorable: false, payload: EMPTY, serviceId: '', availableServiceIds: [], connectionId: 0 };
}

/** Throws unless a varint starting at `pos` ends before `end` within 10 bytes. */
function checkVarint(buf: Uint8Array, pos: number, end: number): void {
  const last = Math.min(end, pos + 10);
  for (let i = pos; i < last; i++) if (buf[i] < 0x80) return;
  throw new TunnelError(ErrorCode.TRUNCATED, pos + 10 <= end ? 'varint longer than 10 bytes' : 'varint runs past the end of the message');
}

function readVarint(pbf: PbfReader, end: number, signed = false): number {
  checkVarint(pbf.buf, pbf.pos, end);
  return pbf.readVarint(signed);
}

/** Reads a length prefix and returns the end of the delimited bytes. */
function readLengthEnd(pbf: PbfReader, end: number): number {
  const len = readVarint(pbf, end);
  const stop = pbf.pos + len;
  if (stop > end) throw new TunnelError(ErrorCode.TRUNCATED, `length-delimited field of ${len} bytes runs past the end of the message`);
  return stop;
}

function readUtf8(pbf: PbfReader, end: number, what: string): string {
  const stop = readLengthEnd(pbf, end);
  const bytes = pbf.buf.subarray(pbf.pos, stop);
  pbf.pos = stop;
  try {
    return utf8.decode(bytes);
  } catch (err) {
    throw new TunnelError(ErrorCode.BAD_UTF8, `${what} is not valid UTF-8`, { cause: err });
  }
}

function expectWire(field: number, wire: number, expected: number): void {
  if (wire !== expected) throw new TunnelError(ErrorCode.WIRE_TYPE, `field ${field} has wire type ${wire}, expected ${expected}`);
}

function readInt32(pbf: PbfReader, end: number, what: string): number {
  const value = readVarint(pbf, end, true);
  if (value < -0x80000000 || value > 0x7fffffff) throw new TunnelError(ErrorCode.FIELD_RANGE, `${what} ${value} is outside int32`);
  return value;
}

function skipField(pbf: PbfReader, field: number, wire: number, end: number): void {
  switch (wire) {
    case VARINT: readVarint(pbf, end); return;
    case I64: pbf.pos += 8; break;
    case LEN: pbf.pos = readLengthEnd(pbf, end); return;
    case I32: pbf.pos += 4; break;
    default: throw new TunnelError(ErrorCode.WIRE_TYPE, `field ${field} has unsupported wire type ${wire}`);
  }
  if (pbf.pos > end) throw new TunnelError(ErrorCode.TRUNCATED, `fixed-size field ${field} runs past the end of the message`);
}

/** What reading a message noticed beyond its fields (for callers that forward the original bytes). */
export interface ReadInfo {
  /** Set to true when the message carried a field this reader does not know (it was skipped). */
  unknownFields: boolean;
}

/** Reads one Message occupying `pbf.pos` up to `end`. Unknown fields are skipped (and noted in `info`). */
export function readMessage(pbf: PbfReader, end: number, info?: ReadInfo): Message {
  const msg = emptyMessage();
  while (pbf.pos < end) {
    const key = readVarint(pbf, end);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    switch (field) {
      case 0:
        throw new TunnelError(ErrorCode.WIRE_TYPE, 'field number 0 is not allowed');
      case F_TYPE:
        expectWire(field, wire, VARINT);
        msg.type = readInt32(pbf, end, 'type');
        break;
      case F_STREAM_ID:
        expectWire(field, wire, VARINT);
        msg.streamId = readInt32(pbf, end, 'streamId');
        break;
      case F_IGNORABLE:
        expectWire(field, wire, VARINT);
        msg.ignorable = readVarint(pbf, end) !== 0;
        break;
      case F_PAYLOAD: {
        expectWire(field, wire, LEN);
        const stop = readLengthEnd(pbf, end);
        msg.payload = pbf.buf.subarray(pbf.pos, stop);
        pbf.pos = stop;
        break;
      }
      case F_SERVICE_ID:
        expectWire(field, wire, LEN);
        msg.serviceId = readUtf8(pbf, end, 'serviceId');
        break;
      case F_AVAILABLE_SERVICE_IDS:
        expectWire(field, wire, LEN);
        msg.availableServiceIds.push(readUtf8(pbf, end, 'availableServiceIds'));
        break;
      case F_CONNECTION_ID: {
        expectWire(field, wire, VARINT);
        const value = readVarint(pbf, end);
        if (value > 0xffffffff) throw new TunnelError(ErrorCode.FIELD_RANGE, `connectionId ${value} is outside uint32`);
        msg.connectionId = value;
        break;
      }
      default:
        skipField(pbf, field, wire, end);
        if (info) info.unknownFields = true;
    }
  }
  return msg;
}

/**
 * One reader for every decode (decoding is synchronous and never re-entered): a PbfReader per
 * message would also allocate a DataView. Only its varint reads are used, which read `buf`
 * alone, so the reader's DataView (for fixed-size fields) is left stale on purpose.
 */
const sharedReader = new PbfReader(EMPTY);

/** Decodes the protobuf message (without length prefix) in `bytes[start, end)`; views (payload) point into `bytes`. */
export function decodeMessageAt(bytes: Uint8Array, start: number, end: number, info?: ReadInfo): Message {
  const reader = sharedReader;
  reader.buf = bytes;
  reader.pos = start;
  try {
    return readMessage(reader, end, info);
  } finally {
    reader.buf = EMPTY;
  }
}

/** Decodes a whole protobuf message (without length prefix). */
export function decodeMessage(bytes: Uint8Array): Message {
  return decodeMessageAt(bytes, 0, bytes.length);
}

/** Writes the fields that differ from their proto3 defaults, in field-number order. */
export function writeMessage(msg: MessageInit, pbf: PbfWriter): void {
  if (msg.type) pbf.writeVarintField(F_TYPE, msg.type);
  if (msg.streamId) pbf.writeVarintField(F_STREAM_ID, msg.streamId);
  if (msg.ignorable) pbf.writeBooleanField(F_IGNORABLE, true);
  if (msg.payload && msg.payload.length > 0) pbf.writeBytesField(F_PAYLOAD, msg.payload);
  if (msg.serviceId) pbf.writeStringField(F_SERVICE_ID, msg.serviceId);
  // Repeated elements are written even when empty: their count is information.
  if (msg.availableServiceIds) for (const id of msg.availableServiceIds) pbf.writeStringField(F_AVAILABLE_SERVICE_IDS, id);
  if (msg.connectionId) pbf.writeVarintField(F_CONNECTION_ID, msg.connectionId);
}

function varintSize(value: number): number {
  if (value < 0) return 10;
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}

function lengthDelimitedSize(len: number): number {
  return 1 + varintSize(len) + len;
}

/** Upper bound of the encoded size (strings counted at 4 bytes a character, as pbf reserves). */
export function maxEncodedSize(msg: MessageInit): number {
  let size = 0;
  if (msg.type) size += 1 + varintSize(msg.type);
  if (msg.streamId) size += 1 + varintSize(msg.streamId);
  if (msg.ignorable) size += 2;
  if (msg.payload && msg.payload.length > 0) size += lengthDelimitedSize(msg.payload.length);
  if (msg.serviceId) size += lengthDelimitedSize(msg.serviceId.length * 4);
  if (msg.availableServiceIds) for (const id of msg.availableServiceIds) size += lengthDelimitedSize(id.length * 4);
  if (msg.connectionId) size += 1 + varintSize(msg.connectionId);
  return size;
}

/** Encodes a message without its length prefix. */
export function encodeMessage(msg: MessageInit): Uint8Array {
  const pbf = new PbfWriter(new Uint8Array(maxEncodedSize(msg) + 16));
  writeMessage(msg, pbf);
  return pbf.finish();
}
