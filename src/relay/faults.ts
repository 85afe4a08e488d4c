/**
 * Faults a test injects into a relay, to see how proxies live through a service that refuses
 * or stops answering. Passed as `RelayOptions.faults` by test code only: the server asks on
 * each upgrade, each peer on each ping. Not part of the library's exports.
 */
export interface RelayFaults {
  /** An HTTP status to refuse this upgrade with instead of accepting it; undefined: go on. */
  rejectUpgrade(): number | undefined;
  /** false: WebSocket pings go unanswered and no heartbeat is sent (a dead service, as a proxy sees it). */
  answerPings(): boolean;
}

export const NO_FAULTS: RelayFaults = {
  rejectUpgrade: () => undefined,
  answerPings: () => true,
};
