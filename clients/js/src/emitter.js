// A minimal typed event emitter: `on` returns the function that unsubscribes.

/**
 * @template {Record<string, any>} Events
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<(data: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {(data: Events[K]) => void} listener
   * @returns {() => void} unsubscribes
   */
  on(event, listener) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {(data: Events[K]) => void} listener
   */
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {Events[K]} data
   */
  emit(event, data) {
    for (const listener of [...(this._listeners.get(event) ?? [])]) {
      try {
        listener(data);
      } catch (e) {
        // A listener's bug must not break the client's own bookkeeping.
        console.error(`imlog: a listener of "${String(event)}" threw`, e);
      }
    }
  }
}
