/** Types for the tests that import scripts/fetch-node.mjs. */
export const cacheRoot: string;
export function fetchNode(spec: { package: string; version: string; integrity: string; bin: string }): string;
