/**
 * Semantic checks on a decoded Message, per negotiated protocol version and sender.
 * Pure: returns the first violated rule as a TunnelError, or undefined.
 */
import { MAX_PAYLOAD_BYTES, type ProtocolVersion } from './constants';
import { ErrorCode, TunnelError } from './errors';
import { MessageType, typeName, type Message } from './message';

export interface ValidateOptions {
  /** Version of the negotiated subprotocol. */
  version: ProtocolVersion;
  /** Who sent the message: the service (received by a proxy) or a client proxy (received by the service). */
  from: 'service' | 'client';
  /** Default 64512 (`message.max_payload_size`). */
  maxPayloadBytes?: number;
}

/** Highest message type each protocol version defines (V1: 1-4, V2: +SERVICE_IDS, V3: +CONNECTION_*). */
const HIGHEST_TYPE: Record<ProtocolVersion, number> = { 1: MessageType.SESSION_RESET, 2: MessageType.SERVICE_IDS, 3: MessageType.CONNECTION_RESET };

/** True for a type the given version defines (0 never is). */
export function isKnownType(type: number, version: ProtocolVersion): boolean {
  return type >= MessageType.DATA && type <= HIGHEST_TYPE[version];
}

/** Messages that belong to a stream and so must carry a stream id. */
export function isStreamMessage(type: number): boolean {
  return type === MessageType.DATA || type === MessageType.STREAM_START || type === MessageType.STREAM_RESET
    || type === MessageType.CONNECTION_START || type === MessageType.CONNECTION_RESET;
}

export function validateMessage(msg: Message, options: ValidateOptions): TunnelError | undefined {
  const { version, from } = options;
  const maxPayload = options.maxPayloadBytes ?? MAX_PAYLOAD_BYTES;
  if (!isKnownType(msg.type, version)) {
    // An ignorable message of an unknown type is valid: the receiver drops it.
    if (msg.ignorable && msg.type !== MessageType.UNKNOWN) return undefined;
    if (msg.type === MessageType.UNKNOWN) return new TunnelError(ErrorCode.BAD_TYPE, 'message type 0 (UNKNOWN) is not allowed');
    if (msg.type > 0 && msg.type <= HIGHEST_TYPE[3]) return new TunnelError(ErrorCode.BAD_VERSION, `${typeName(msg.type)} is not part of protocol V${version}`);
    return new TunnelError(ErrorCode.BAD_TYPE, `unknown message type ${msg.type} not marked ignorable`);
  }
  if (msg.payload.length > maxPayload) {
    return new TunnelError(ErrorCode.PAYLOAD_TOO_LARGE, `payload of ${msg.payload.length} bytes exceeds the limit of ${maxPayload}`);
  }
  if (isStreamMessage(msg.type) && msg.streamId === 0) {
    return new TunnelError(ErrorCode.NO_STREAM_ID, `${typeName(msg.type)} without a stream id`);
  }
  if (from === 'client' && (msg.type === MessageType.SERVICE_IDS || msg.type === MessageType.SESSION_RESET)) {
    return new TunnelError(ErrorCode.WRONG_SENDER, `${typeName(msg.type)} may only be sent by the service`);
  }
  return undefined;
}
