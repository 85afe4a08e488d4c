/** Replaced at bundle time by build.mjs from package.json; the fallback serves tests run from source. */
declare const __LOCALPROXY_VERSION__: string | undefined;

export const VERSION: string = typeof __LOCALPROXY_VERSION__ === 'string' ? __LOCALPROXY_VERSION__ : '0.0.0-dev';
export const PRODUCT = 'localproxy';
