/** The service connection: what the tunnel and the CLI use from src/transport. */
export { connectToService, refusalHint, USER_AGENT, SERVICE_CONNECT_TIMEOUT_MS, type ServiceConnection, type ConnectOptions } from './connect';
export { connectWithRetry, Backoff, delay, type RetryOptions, type RetryOutcome } from './retry';
export { startKeepalive, answerPings, type KeepaliveOptions } from './keepalive';
export { deriveClientToken } from './client-token';
export { ConnectError, ConnectErrorCode, isConnectError, type ConnectErrorCodeValue } from './errors';
export { parseProxyUrl, proxyFromEnv, noProxyFromEnv, shouldBypassProxy, urlDecode, describeProxy, DEFAULT_WEB_PROXY_PORT, type ProxyEnvValue } from './web-proxy';
export { openProxyTunnel, connectRequest, readConnectResponse, CONNECT_RESPONSE_MAX_BYTES, CONNECT_RESPONSE_TIMEOUT_MS } from './http-connect';
export { loadCaDirectory, trustedCertificates, systemCertificates } from './ca';
