// Errors the SDK rejects with. `code` is the server's stable code
// (docs/PROTOCOL.md, Errors) or one of the SDK's own:
// - `disconnected`: the connection dropped before the reply came; the
//   request may or may not have happened (`send` resends by itself).
// - `timeout`: no reply within the request timeout.
// - `ended`: the session is over (logout, kicked, bad token); log in again.
// - `aborted`: the caller paused or cancelled it.

export class ImlogError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} [status] the HTTP status, for HTTP requests
   */
  constructor(code, message, status) {
    super(message);
    this.name = 'ImlogError';
    this.code = code;
    this.status = status;
  }

  /** Whether trying again later may succeed. */
  get retryable() {
    return ['unavailable', 'projection_lagging', 'disconnected', 'timeout', 'rate_limited'].includes(
      this.code,
    );
  }
}

/** Random hex, from the one random source every context has (a page on a
 * plain-http address has no `crypto.randomUUID`).
 * @param {number} bytes */
export function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Exponential backoff with jitter: attempt 0, 1, 2… → ~min, 2·min, … ≤ max.
 * @param {number} attempt @param {number} min @param {number} max */
export function backoffMs(attempt, min, max) {
  const base = Math.min(max, min * 2 ** Math.min(attempt, 20));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/** Unwraps an HTTP reply's `{ok, data}` / `{ok: false, error}`.
 * @param {Response} response @returns {Promise<any>} */
export async function envelope(response) {
  /** @type {any} */
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: below
  }
  if (response.ok && body?.ok) return body.data;
  const error = body?.error ?? {};
  throw new ImlogError(
    error.code ?? (response.status >= 500 ? 'unavailable' : 'bad_request'),
    error.message ?? `HTTP ${response.status}`,
    response.status,
  );
}


/**
 * A promise with its settle functions, for an outcome that arrives through
 * events (an upload's, a download's, a transfer's `done`). Unobserved
 * rejections are not reported: the owner's events tell them.
 * @template T
 * @returns {{promise: Promise<T>, resolve: (value: T) => void, reject: (e: ImlogError) => void}}
 */
export function deferred() {
  /** @type {(value: T) => void} */
  let resolve = () => {};
  /** @type {(e: ImlogError) => void} */
  let reject = () => {};
  /** @type {Promise<T>} */
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}
