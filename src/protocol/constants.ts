/** Sizes, names and rules fixed by the protocol guides (V1-V3) and by RFC 6455 for the WebSocket. */

/** Length prefix in front of every tunnel message: unsigned 16-bit big-endian. */
export const LENGTH_PREFIX_BYTES = 2;
/** Largest protobuf message the reference accepts (`message.max_size`). */
export const MAX_MESSAGE_BYTES = 65536;
/** Largest application payload in one DATA message (`message.max_payload_size`, 63 KiB). */
export const MAX_PAYLOAD_BYTES = 64512;
/** Largest WebSocket message either side may send. */
export const MAX_WS_MESSAGE_BYTES = 131076;
/** Stream ids are int32 (the reference wraps to 1 after this); connection ids uint32. */
export const MAX_STREAM_ID = 0x7fffffff;
export const MAX_CONNECTION_ID = 0xffffffff;

export const SUBPROTOCOL_V1 = 'aws.iot.securetunneling-1.0';
export const SUBPROTOCOL_V2 = 'aws.iot.securetunneling-2.0';
export const SUBPROTOCOL_V3 = 'aws.iot.securetunneling-3.0';

export type ProtocolVersion = 1 | 2 | 3;

/** Protocol version of a subprotocol name, or 0 when it is not one of ours. */
export function subprotocolVersion(name: string | undefined): ProtocolVersion | 0 {
  switch (name) {
    case SUBPROTOCOL_V1: return 1;
    case SUBPROTOCOL_V2: return 2;
    case SUBPROTOCOL_V3: return 3;
    default: return 0;
  }
}

/** WebSocket close codes (RFC 6455 7.4.1): a normal close, and the code reported for a connection lost without a close frame. */
export const CLOSE_NORMAL = 1000;
export const CLOSE_ABNORMAL = 1006;

/** What the service accepts as a client token (behaviour spec 2.2, Decisions 7). */
export const CLIENT_TOKEN_MIN_CHARS = 32;
export const CLIENT_TOKEN_MAX_CHARS = 128;
export const CLIENT_TOKEN_PATTERN = new RegExp(`^[a-zA-Z0-9-]{${CLIENT_TOKEN_MIN_CHARS},${CLIENT_TOKEN_MAX_CHARS}}$`);
