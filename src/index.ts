/** Library entry point: the protocol codec, settings and logger; the tunnel and relay add their exports here. */
export { MessageType, typeName, encodeMessage, decodeMessage, readMessage, writeMessage, type Message, type MessageInit } from './protocol/message';
export { encodeFrame, packFrames, FrameDecoder } from './protocol/framing';
export { validateMessage, isKnownType } from './protocol/validate';
export { TunnelError, ErrorCode } from './protocol/errors';
export * from './protocol/constants';
export { Logger, LogLevel, silentLogger } from './log';
export { defaultSettings, mergeSettingsJson, exportSettings, type Settings } from './settings';
export { ExitCode, ExitError, exitCodeOf } from './exit';
export type * from './options';
export { startRelay, type Relay, type RelayOptions, type RelayStats, type PeerEvent } from './relay/server';
export { ManualClock, systemClock, type Clock } from './relay/clock';
export { defaultLimits, type RelayLimits } from './relay/limits';
export { RelayConfigError } from './relay/errors';
export { generateSelfSigned, loadOrCreateSelfSigned, opensslSubjectHash, type SelfSignedCert } from './relay/certs';
export { startProxy, type LocalProxy, type ProxyOutcome } from './tunnel/proxy';
export {
  connectToService, connectWithRetry, Backoff, startKeepalive, deriveClientToken, USER_AGENT,
  ConnectError, ConnectErrorCode, isConnectError, parseProxyUrl, proxyFromEnv, noProxyFromEnv, shouldBypassProxy,
  type ServiceConnection, type RetryOptions, type RetryOutcome, type KeepaliveOptions, type ProxyEnvValue,
} from './transport/index';
export { TunnelApiClient, ApiError as TunnelApiError, defaultEndpoint as defaultApiEndpoint, type TunnelApiOptions, type ApiCredentials } from './api/client';
export { startAgent, DEFAULT_MAX_TUNNELS, type Agent, type AgentOptions } from './agent/agent';
export { notificationTopic, encodeNotification, parseNotification, type TunnelNotification } from './mqtt/notification';
export { mqttNotifier, type TunnelNotifier } from './relay/notify';
