// Speech bubbles in time: one queue per channel, as the d-zone frontend has it, so a channel
// shows one bubble at a time and a burst of messages plays out one after another.

const MIN_MS = 1000;
const MAX_MS = 6000;
const PER_CHAR_MS = 45;
const QUEUE_LIMIT = 100; // past this a channel is flooding; the oldest waiting lines are skipped
export const FADE_IN_MS = 160;
export const FADE_OUT_MS = 380;

function duration(text, waiting) {
  const natural = Math.min(MAX_MS, MIN_MS + PER_CHAR_MS * text.length);
  // A long queue plays faster, but never below a readable second.
  return waiting > 2 ? Math.max(MIN_MS, natural / 2) : natural;
}

export class Chat {
  /** onState(bubble) is called when a bubble starts showing, ends, or is skipped. */
  constructor(onState) {
    this.onState = onState;
    this.channels = new Map(); // channel -> {queue: [], current: bubble|null}
    this.active = []; // bubbles on screen now; reused so the frame loop allocates nothing
    this.nextId = 1;
  }

  push(uid, text, channel, now) {
    let ch = this.channels.get(channel);
    if (ch === undefined) {
      ch = { queue: [], current: null };
      this.channels.set(channel, ch);
    }
    const bubble = { id: this.nextId++, uid, text, channel, start: 0, end: 0, state: "queued", image: null };
    ch.queue.push(bubble);
    while (ch.queue.length > QUEUE_LIMIT) this._finish(ch.queue.shift(), "skipped");
    if (ch.current === null) this._advance(ch, now);
    return bubble;
  }

  /** Called once a frame: ends bubbles whose time is up and starts the next of each channel. */
  update(now) {
    for (const ch of this.channels.values()) {
      if (ch.current !== null && now >= ch.current.end) {
        this._finish(ch.current, "done");
        ch.current = null;
        this._advance(ch, now);
      }
    }
  }

  /** Someone left: their bubble goes and their queued lines are not said. */
  forget(uid) {
    const now = performance.now();
    for (const ch of this.channels.values()) {
      for (let i = ch.queue.length - 1; i >= 0; i--) {
        if (ch.queue[i].uid === uid) this._finish(ch.queue.splice(i, 1)[0], "skipped");
      }
      if (ch.current !== null && ch.current.uid === uid) {
        this._finish(ch.current, "skipped");
        ch.current = null;
        this._advance(ch, now);
      }
    }
  }

  clear() {
    for (const ch of this.channels.values()) {
      for (const b of ch.queue) this._finish(b, "skipped");
      if (ch.current !== null) this._finish(ch.current, "skipped");
    }
    this.channels.clear();
    this.active.length = 0;
  }

  /** 0..1 opacity of a showing bubble. */
  static alpha(bubble, now) {
    const shown = now - bubble.start;
    const left = bubble.end - now;
    if (shown < FADE_IN_MS) return Math.max(0, shown / FADE_IN_MS);
    if (left < FADE_OUT_MS) return Math.max(0, left / FADE_OUT_MS);
    return 1;
  }

  _advance(ch, now) {
    const next = ch.queue.shift();
    if (next === undefined) return;
    next.start = now;
    next.end = now + duration(next.text, ch.queue.length);
    next.state = "showing";
    ch.current = next;
    this.active.push(next);
    this.onState(next);
  }

  _finish(bubble, state) {
    bubble.state = state;
    bubble.image = null;
    const i = this.active.indexOf(bubble);
    if (i !== -1) this.active.splice(i, 1);
    this.onState(bubble);
  }
}
