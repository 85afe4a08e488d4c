/** Sizes and names fixed by the protocol guides (V1-V3). */

/** Length prefix in front of every tunnel message: unsigned 16-bit big-endian. */
export const LENGTH_PREFIX_BYTES = 2;
/** Largest protobuf message the reference accepts (`message.max_size`). */
export const MAX_MESSAGE_BYTES = 65536;
/** Largest application payload in one DATA message (`message.max_payload_size`, 63 KiB). */
export const MAX_PAYLOAD_BYTES = 64512;
/** Largest WebSocket message either side may send. */
export const MAX_WS_MESSAGE_BYTES = 131076;

export const SUBPROTOCOL_V1 = 'aws.iot.securetunneling-1.0';
export const SUBPROTOCOL_V2 = 'aws.iot.securetunneling-2.0';
export const SUBPROTOCOL_V3 = 'aws.iot.securetunneling-3.0';
export const SUBPROTOCOLS = [SUBPROTOCOL_V1, SUBPROTOCOL_V2, SUBPROTOCOL_V3] as const;

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
