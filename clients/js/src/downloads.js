// Ranged downloads (docs/PROTOCOL.md, Downloads): the bytes arrive as a
// stream with progress; pause aborts, resume asks for the rest with
// `Range` and `If-Range` (so a changed file starts over rather than mixing),
// and a dropped connection resumes by itself.

import { Emitter } from './emitter.js';
import { ImlogError, backoffMs, envelope, sleep, deferred } from './errors.js';

/** @typedef {import('./connection.js').Connection} Connection */

/** @typedef {'downloading' | 'paused' | 'completed' | 'failed'} DownloadState */

/**
 * @typedef {{
 *   progress: {received: number, size: number | null},
 *   state: {state: DownloadState, error?: ImlogError},
 * }} DownloadEvents
 */

/** Attempts after network errors before the download fails. */
const ATTEMPTS = 6;

/**
 * @extends {Emitter<DownloadEvents>}
 */
export class Download extends Emitter {
  /**
   * Starts downloading a completed upload.
   * @param {Connection} client
   * @param {string} uploadId
   */
  static start(client, uploadId) {
    const download = new Download(client, uploadId);
    download._run();
    return download;
  }

  /** @param {Connection} client @param {string} uploadId */
  constructor(client, uploadId) {
    super();
    this.client = client;
    this.uploadId = uploadId;
    /** @type {DownloadState} */
    this.state = 'downloading';
    /** @type {Uint8Array[]} */
    this._parts = [];
    this.received = 0;
    /** @type {number | null} */
    this.size = null;
    /** @type {string | null} the strong ETag (the SHA-256) */
    this.etag = null;
    this.contentType = 'application/octet-stream';
    /** @type {AbortController | null} */
    this._abort = null;
    /** Counts runs (start, each resume); a pause ends the current one, and
     * what is left of an older run stops without touching the bytes. */
    this._runs = 0;
    /** @type {ReturnType<typeof deferred<Blob>>} */
    const outcome = deferred();
    /** Resolves with the whole file. @type {Promise<Blob>} */
    this.done = outcome.promise;
    this._resolve = outcome.resolve;
    this._reject = outcome.reject;
  }

  pause() {
    if (this.state !== 'downloading') return;
    this._runs++;
    this._setState('paused');
    this._abort?.abort();
  }

  resume() {
    if (this.state !== 'paused') return;
    this._setState('downloading');
    this._run();
  }

  async _run() {
    const run = ++this._runs;
    /** Whether this run is still the one to go on. */
    const current = () => run === this._runs && this.state === 'downloading';
    for (let attempt = 0; current(); ) {
      try {
        await this._fetchRest(current);
        return;
      } catch (e) {
        const error = e instanceof ImlogError ? e : new ImlogError('disconnected', String(e));
        if (!current()) return;
        if (!error.retryable || ++attempt >= ATTEMPTS) {
          this.state = 'failed';
          this.emit('state', { state: 'failed', error });
          this._reject(error);
          return;
        }
        await sleep(backoffMs(attempt, 250, 5_000));
      }
    }
  }

  /** Fetches from `received` to the end. @param {() => boolean} current */
  async _fetchRest(current) {
    if (this.size != null && this.received >= this.size) {
      // Paused after the last byte: nothing left to ask for (a range
      // starting at the end would be answered 416).
      this._complete();
      return;
    }
    const abort = new AbortController();
    this._abort = abort;
    /** @type {Record<string, string>} */
    const headers = {};
    if (this.received > 0) {
      headers.range = `bytes=${this.received}-`;
      if (this.etag) headers['if-range'] = this.etag;
    }
    const response = await this.client.fetch('GET', `/v1/uploads/${this.uploadId}/content`, {
      headers,
      signal: abort.signal,
    });
    if (!current()) throw new ImlogError('aborted', 'paused');
    if (response.status === 200) {
      // The whole file: either asked for, or it changed under If-Range.
      this._parts = [];
      this.received = 0;
      const length = response.headers.get('content-length');
      this.size = length == null ? null : Number(length);
    } else if (response.status === 206) {
      const total = response.headers.get('content-range')?.split('/')[1];
      this.size = total ? Number(total) : null;
    } else {
      await envelope(response);
    }
    this.etag = response.headers.get('etag') ?? this.etag;
    this.contentType = response.headers.get('content-type') ?? this.contentType;
    if (!response.body) throw new ImlogError('disconnected', 'no body');
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        // A pause (and maybe a resume asking from `received` on) came
        // meanwhile: these bytes are no longer this run's to keep.
        if (!current()) throw new ImlogError('aborted', 'paused');
        if (done) break;
        this._parts.push(value);
        this.received += value.length;
        this.emit('progress', { received: this.received, size: this.size });
      }
    } catch (e) {
      if (abort.signal.aborted || !current()) {
        reader.cancel().catch(() => {});
        throw new ImlogError('aborted', 'paused');
      }
      throw new ImlogError('disconnected', `the download broke off: ${/** @type {Error} */ (e).message}`);
    }
    if (this.size != null && this.received < this.size) {
      throw new ImlogError('disconnected', 'the download ended early');
    }
    this._complete();
  }

  _complete() {
    this.state = 'completed';
    this.emit('state', { state: 'completed' });
    this._resolve(new Blob(/** @type {BlobPart[]} */ (this._parts), { type: this.contentType }));
  }

  /** @param {DownloadState} state */
  _setState(state) {
    this.state = state;
    this.emit('state', { state });
  }
}
