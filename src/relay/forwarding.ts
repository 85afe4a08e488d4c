/**
 * The forwarding loop: what one WebSocket message from a peer becomes. Its byte stream is
 * decoded with FrameDecoder, each message validated as a client's, normalised (V1 service
 * ids) and forwarded in order to the other end, several frames per WebSocket message up to
 * 131076 bytes; a message that went through unchanged is forwarded as it came.
 */
import { LogLevel, type Logger } from '../log';
import type { ProtocolVersion } from '../protocol/constants';
import { MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { FrameDecoder, type OnMessage } from '../protocol/framing';
import { MessageType, typeName, type Message, type MessageInit } from '../protocol/message';
import { validateMessage, type ValidateOptions } from '../protocol/validate';
import type { LinkEnd, TunnelLink } from './link';
import { laneKey } from './paced';
import type { PeerMode } from './store/record';

/**
 * What one WebSocket message brings for a receiver: each frame as it came where the receiver
 * takes it unchanged, re-encoded where not. When every frame of the message went as it came,
 * the message itself is forwarded: no re-encoding, no copy, one send. A peer and a cluster
 * bridge forward through it alike.
 */
export class Relayed {
  private readonly frames: Buffer[] = [];
  /** Each frame's lane (paced.ts), kept only when the receiver is laned. */
  private readonly keys: (string | undefined)[] = [];
  private asReceived = false;
  /** During `pass`: the receiver of this message (undefined: none), and the first error met in it. */
  to?: LinkEnd;
  error?: string;

  /**
   * Decodes one WebSocket message through `decoder` (its callbacks read `to`, `add` or `skip`
   * each frame, and record the first error with `fail`), then sends `to` what it got: whatever
   * arrived before an error too, in order. Returns that error. The state lives here, in fields,
   * so a message costs no closure.
   */
  pass(decoder: FrameDecoder, chunk: Buffer, to: LinkEnd | undefined, onFrame: OnMessage, onDecodeError: (err: Error) => void): string | undefined {
    this.to = to;
    this.error = undefined;
    this.frames.length = 0;
    this.keys.length = 0;
    this.asReceived = decoder.bufferedBytes === 0;
    decoder.push(chunk, onFrame, onDecodeError);
    const error = this.error;
    this.to = undefined;
    this.error = undefined;
    if (to) this.deliver(to, chunk, !error && decoder.bufferedBytes === 0);
    return error;
  }

  /** Records `error` for the message being passed, unless one was met before. */
  fail(error: string | undefined): void {
    this.error ??= error;
  }

  /** A frame of this message is not forwarded to the receiver. */
  skip(): void {
    this.asReceived = false;
  }

  /** `msg` for `to`: its original bytes when it has them and its service id reaches `to` as it arrived. */
  add(to: LinkEnd, msg: Message, frame: Uint8Array | undefined, receivedServiceId: string): void {
    if (frame && to.wireServiceId(msg.serviceId) === receivedServiceId) {
      this.frames.push(frame as Buffer);
    } else {
      this.asReceived = false;
      this.frames.push(to.frameFor(msg));
    }
    if (to.laned) this.keys.push(laneKey(msg));
  }

  /** Sends the message's frames to `to`; `whole`: it was decoded without error up to its last byte. */
  private deliver(to: LinkEnd, chunk: Buffer, whole: boolean): void {
    const asIs = this.asReceived && whole && this.frames.length > 0 && chunk.length <= MAX_WS_MESSAGE_BYTES;
    if (to.laned) to.sendFrames(this.frames, this.keys, asIs ? chunk : undefined);
    else if (asIs) to.sendFrames([chunk]);
    else to.sendFrames(this.frames);
    this.frames.length = 0;
    this.keys.length = 0;
  }
}

/** The peer whose input a Forwarder reads. */
export interface ForwardingPeer {
  readonly link: TunnelLink;
  readonly mode: PeerMode;
  readonly version: ProtocolVersion;
  readonly log: Logger;
  frameFor(msg: MessageInit): Buffer;
  sendFrames(frames: Buffer[]): void;
}

/**
 * One peer's input, message by message: decoded, checked, normalised and forwarded to the
 * other end. With the other end absent nobody can answer a start, so it is refused at once
 * (STREAM_RESET / CONNECTION_RESET, sent back to the peer) and every other message is dropped.
 */
export class Forwarder {
  /** Replies were sent back to the peer for the last message (its own backlog then counts). */
  replied = false;
  private readonly decoder = new FrameDecoder();
  /** How the peer's messages are validated: one object for all of them. */
  private readonly validation: ValidateOptions;
  // State of the WebSocket message being decoded, in fields so that decoding needs no closure
  // and no arrays of its own per message.
  private readonly relayed = new Relayed();
  private readonly replies: Buffer[] = [];

  constructor(private readonly peer: ForwardingPeer) {
    this.validation = { version: peer.version, from: 'client' };
  }

  /**
   * Forwards one WebSocket message to `to` (undefined: the other end is absent or closing).
   * Whatever arrived before a violation is still delivered, in order, and replies go back
   * first; returns the violation.
   */
  forward(chunk: Buffer, to: LinkEnd | undefined): string | undefined {
    const replies = this.replies;
    const error = this.relayed.pass(this.decoder, chunk, to, this.onFrame, this.onDecodeError);
    this.replied = replies.length > 0;
    if (this.replied) {
      this.peer.sendFrames(replies);
      replies.length = 0;
    }
    return error;
  }

  /** The connection closed: a partial frame is dropped. */
  reset(): void {
    this.decoder.reset();
  }

  private readonly onFrame = (msg: Message, frame: Uint8Array | undefined): void => {
    const relayed = this.relayed;
    if (relayed.error) return;
    const received = msg.serviceId;
    relayed.fail(this.check(msg));
    if (relayed.error) return;
    const other = relayed.to;
    if (!other) {
      relayed.skip();
      this.answerAbsent(msg);
      return;
    }
    if (!other.takes(msg.type)) {
      relayed.skip();
      this.peer.log.limited(LogLevel.DEBUG, 'not-forwarded', `not forwarded: ${typeName(msg.type)}, which the ${other.mode} did not declare`);
      return;
    }
    this.peer.link.track(msg);
    relayed.add(other, msg, frame, received);
  };

  private readonly onDecodeError = (err: Error): void => {
    this.relayed.fail(`undecodable frame: ${err.message}`);
  };

  private answerAbsent(msg: Message): void {
    if (msg.type === MessageType.STREAM_START) {
      this.replies.push(this.peer.frameFor({ type: MessageType.STREAM_RESET, serviceId: msg.serviceId, streamId: msg.streamId }));
    } else if (msg.type === MessageType.CONNECTION_START) {
      this.replies.push(this.peer.frameFor({ type: MessageType.CONNECTION_RESET, serviceId: msg.serviceId, streamId: msg.streamId, connectionId: msg.connectionId }));
    }
  }

  /** Returns a violation text, or undefined; fills in the service id of V1-style messages. */
  private check(msg: Message): string | undefined {
    const invalid = validateMessage(msg, this.validation);
    if (invalid) return invalid.message;
    // Stream ids are counted up from 1 by the source; a negative one is no stream the other side can know.
    if (msg.streamId < 0) return `${typeName(msg.type)} with a negative stream id (${msg.streamId})`;
    if (this.peer.mode === 'destination' && (msg.type === MessageType.STREAM_START || msg.type === MessageType.CONNECTION_START)) {
      return `${typeName(msg.type)} may only be sent by a source`;
    }
    const services = this.peer.link.tunnel.services;
    if (msg.serviceId === '') {
      // V1 form: with exactly one service it can only mean that one (V2 guide, compatibility).
      if (services.length === 1) msg.serviceId = services[0];
      else if (services.length > 1) return `${typeName(msg.type)} without a service id in a tunnel with ${services.length} services`;
    } else if (!services.includes(msg.serviceId)) {
      return `service id ${JSON.stringify(msg.serviceId)} is not part of this tunnel`;
    }
    return undefined;
  }
}
