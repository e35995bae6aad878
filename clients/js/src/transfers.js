// Online file transfer through a gateway's relay (docs/PROTOCOL.md, File
// transfer): the sender answers pulls with slices of its file, the receiver
// pulls 1 MiB at a time with up to 4 pulls outstanding. Nothing is stored
// on the server, so both must stay on the page until `done`.

import { Emitter } from './emitter.js';
import { ImlogError, deferred } from './errors.js';

/** @typedef {import('./connection.js').Connection} Connection */
/** @typedef {import('./types.js').Transfer} Transfer */

/**
 * @typedef {{
 *   state: {state: string, reason?: string},
 *   progress: {bytes: number, size: number},
 * }} RelayEvents
 */

const PULL = 1024 * 1024;
const OUTSTANDING = 4;
const FINAL = new Set(['done', 'refused', 'cancelled', 'error']);

/**
 * One side of an online transfer.
 * @extends {Emitter<RelayEvents>}
 */
export class Relay extends Emitter {
  /**
   * Joins as the sender and serves `blob` to the receiver's pulls.
   * @param {Connection} client @param {Transfer} transfer @param {Blob} blob
   */
  static send(client, transfer, blob) {
    return new Relay(client, transfer, 'sender', blob);
  }

  /**
   * Joins as the receiver and pulls the file; `done` resolves with it.
   * @param {Connection} client @param {Transfer} transfer
   */
  static receive(client, transfer) {
    return new Relay(client, transfer, 'receiver', null);
  }

  /**
   * @param {Connection} client @param {Transfer} transfer
   * @param {'sender' | 'receiver'} role @param {Blob | null} blob
   */
  constructor(client, transfer, role, blob) {
    super();
    if (!transfer.relay_url) throw new ImlogError('bad_request', 'not an online transfer');
    if (!client.session) throw new ImlogError('unauthenticated', 'log in first');
    this.transfer = transfer;
    this.role = role;
    this.state = 'joining';
    this.bytes = 0;
    this._blob = blob;
    /** @type {Uint8Array[]} */
    this._parts = [];
    this._nextPull = 0;
    this._outstanding = 0;
    /** Answers to pulls, chained so they go out in order. */
    this._sending = Promise.resolve();
    this._ended = false;
    /** @type {ReturnType<typeof deferred<Blob | null>>} */
    const outcome = deferred();
    /** The sender's resolves with null, the receiver's with the file, when
     * the transfer is `done`; rejects when it ends otherwise.
     * @type {Promise<Blob | null>} */
    this.done = outcome.promise;
    this._resolve = outcome.resolve;
    this._reject = outcome.reject;

    const WebSocketClass = /** @type {typeof WebSocket} */ (client._WebSocket);
    const socket = new WebSocketClass(transfer.relay_url);
    socket.binaryType = 'arraybuffer';
    this._socket = socket;
    const token = client.session.token;
    socket.onopen = () => socket.send(JSON.stringify({ op: 'join', token, role }));
    socket.onmessage = (event) => this._onFrame(event.data);
    socket.onclose = (event) => {
      this._finish('error', event.reason || `the relay closed (${event.code})`);
    };
    // Some WebSocket classes send no `close` after a failed connect (see
    // Connection._connect); a later error is followed by `close`.
    socket.onerror = () => {
      if (socket.readyState !== 1) this._finish('error', 'cannot reach the relay');
    };
  }

  /** Ends the transfer for both sides. */
  cancel() {
    this._op({ op: 'cancel' });
  }

  /** The receiver turns the file down (before it started). */
  refuse() {
    this._op({ op: 'refuse' });
  }

  /** @param {object} frame */
  _op(frame) {
    if (this._socket.readyState === 1) this._socket.send(JSON.stringify(frame));
  }

  /** @param {unknown} data */
  _onFrame(data) {
    if (data instanceof ArrayBuffer) {
      this._onBlock(new Uint8Array(data));
      return;
    }
    if (typeof data !== 'string') return;
    /** @type {any} */
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (event.event === 'state') {
      if (FINAL.has(event.state)) {
        this._finish(event.state, event.reason);
        return;
      }
      this.state = event.state;
      this.emit('state', { state: event.state, reason: event.reason });
      if (event.state === 'waiting_transfer' && this.role === 'receiver') this._pullMore();
    } else if (event.event === 'pull' && this.role === 'sender') {
      this._answer(event.offset, event.size);
    } else if (event.event === 'error') {
      const error = event.error ?? {};
      if (this._socket.readyState !== 1 || error.code !== 'conflict') {
        this._finish('error', error.message ?? 'refused');
      }
    }
  }

  /** @param {number} offset @param {number} size */
  async _answer(offset, size) {
    const blob = /** @type {Blob} */ (this._blob);
    // Answers must go out in the order of the pulls: read in order.
    this._sending = this._sending.then(async () => {
      const bytes = await blob.slice(offset, offset + size).arrayBuffer();
      if (this._socket.readyState !== 1) return;
      this._socket.send(bytes);
      this.bytes += bytes.byteLength;
      this.emit('progress', { bytes: this.bytes, size: this.transfer.size });
    });
  }

  _pullMore() {
    const size = this.transfer.size;
    while (this._outstanding < OUTSTANDING && this._nextPull < size) {
      const n = Math.min(PULL, size - this._nextPull);
      this._op({ op: 'pull', offset: this._nextPull, size: n });
      this._nextPull += n;
      this._outstanding++;
    }
  }

  /** @param {Uint8Array} block */
  _onBlock(block) {
    this._outstanding--;
    this._parts.push(block);
    this.bytes += block.length;
    this.emit('progress', { bytes: this.bytes, size: this.transfer.size });
    if (this.bytes >= this.transfer.size) {
      this._op({ op: 'done' });
    } else {
      this._pullMore();
    }
  }

  /** @param {string} state @param {string} [reason] */
  _finish(state, reason) {
    if (this._ended) return;
    this._ended = true;
    this.state = state;
    this.emit('state', { state, reason });
    if (state === 'done') {
      this._resolve(
        this.role === 'receiver'
          ? new Blob(/** @type {BlobPart[]} */ (this._parts), { type: 'application/octet-stream' })
          : null,
      );
    } else {
      this._reject(new ImlogError(state === 'error' ? 'unavailable' : state, reason ?? state));
    }
    if (this._socket.readyState <= 1) this._socket.close(1000);
  }
}
