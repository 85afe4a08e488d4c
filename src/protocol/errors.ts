/**
 * Every failure the protocol layer reports is a TunnelError with a stable `code`.
 * Callers branch on `code`, never on the message text.
 */
export const ErrorCode = {
  /** A varint runs past the end of the message or is longer than 10 bytes. */
  TRUNCATED: 'ERR_TRUNCATED',
  /** A known field arrived with the wrong wire type, or a wire type that does not exist. */
  WIRE_TYPE: 'ERR_WIRE_TYPE',
  /** A value is outside the range of its field (int32 stream id, uint32 connection id, enum). */
  FIELD_RANGE: 'ERR_FIELD_RANGE',
  /** A string field is not valid UTF-8. */
  BAD_UTF8: 'ERR_BAD_UTF8',
  /** A frame's length prefix exceeds the configured maximum message size. */
  FRAME_TOO_LARGE: 'ERR_FRAME_TOO_LARGE',
  /** A payload is longer than the maximum payload size. */
  PAYLOAD_TOO_LARGE: 'ERR_PAYLOAD_TOO_LARGE',
  /** Message type 0 (UNKNOWN), or a type this version does not know, not marked ignorable. */
  BAD_TYPE: 'ERR_BAD_TYPE',
  /** A stream message without a stream id. */
  NO_STREAM_ID: 'ERR_NO_STREAM_ID',
  /** A message only the service may send came from a client (or the reverse). */
  WRONG_SENDER: 'ERR_WRONG_SENDER',
  /** A message is valid protobuf but not allowed by the negotiated protocol version. */
  BAD_VERSION: 'ERR_BAD_VERSION',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export class TunnelError extends Error {
  readonly code: ErrorCodeValue;
  constructor(code: ErrorCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TunnelError';
    this.code = code;
  }
}
