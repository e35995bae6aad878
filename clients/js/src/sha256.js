// SHA-256 fed piece by piece, so a file of gigabytes is hashed without
// holding it in memory (WebCrypto digests only whole buffers, and pages on
// plain-http addresses other than localhost have no WebCrypto at all).

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

export class Sha256 {
  constructor() {
    this._h = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]);
    this._w = new Uint32Array(64);
    this._block = new Uint8Array(64);
    this._filled = 0;
    this._length = 0;
  }

  /** @param {Uint8Array} data @returns {this} */
  update(data) {
    this._length += data.length;
    let i = 0;
    if (this._filled) {
      const take = Math.min(64 - this._filled, data.length);
      this._block.set(data.subarray(0, take), this._filled);
      this._filled += take;
      i = take;
      if (this._filled < 64) return this;
      this._compress(this._block, 0);
      this._filled = 0;
    }
    for (; i + 64 <= data.length; i += 64) this._compress(data, i);
    if (i < data.length) {
      this._block.set(data.subarray(i));
      this._filled = data.length - i;
    }
    return this;
  }

  /** @returns {string} the digest as 64 lower-case hex digits */
  hex() {
    const bits = this._length * 8;
    const tail = new Uint8Array((this._filled < 56 ? 64 : 128) - this._filled);
    tail[0] = 0x80;
    const view = new DataView(tail.buffer);
    view.setUint32(tail.length - 8, Math.floor(bits / 2 ** 32));
    view.setUint32(tail.length - 4, bits >>> 0);
    this.update(tail);
    return Array.from(this._h, (x) => x.toString(16).padStart(8, '0')).join('');
  }

  /** @param {Uint8Array} data @param {number} at */
  _compress(data, at) {
    const w = this._w;
    for (let t = 0; t < 16; t++) {
      const j = at + t * 4;
      w[t] = (data[j] << 24) | (data[j + 1] << 16) | (data[j + 2] << 8) | data[j + 3];
    }
    for (let t = 16; t < 64; t++) {
      const a = w[t - 15];
      const b = w[t - 2];
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    const h = this._h;
    let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (k + S1 + ch + K[t] + w[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      k = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
  }
}

/**
 * The SHA-256 of a blob (or a slice of one), read 4 MiB at a time; WebCrypto
 * when there is one and the piece is small enough to hold.
 * @param {Blob} blob
 * @param {(hashedBytes: number) => void} [onProgress]
 * @returns {Promise<string>}
 */
export async function sha256Hex(blob, onProgress) {
  const subtle = globalThis.crypto?.subtle;
  if (subtle && blob.size <= 64 * 1024 * 1024) {
    const digest = await subtle.digest('SHA-256', await blob.arrayBuffer());
    onProgress?.(blob.size);
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
  }
  const hash = new Sha256();
  const step = 4 * 1024 * 1024;
  for (let at = 0; at < blob.size; at += step) {
    hash.update(new Uint8Array(await blob.slice(at, at + step).arrayBuffer()));
    onProgress?.(Math.min(blob.size, at + step));
  }
  return hash.hex();
}
