// The socket to the daemon: where it is, opening it, parsing frames, and reconnecting with
// backoff when it closes. It knows nothing about servers or users; app.js decides what to send.

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
// A socket stuck in CONNECTING (a black-holed address) never fires close on its own soon enough.
const OPEN_TIMEOUT_MS = 10000;

/** The socket address: ?socketURL= wins (as in the d-zone frontend), else /ws next to this page. */
export function socketURL(loc = window.location) {
  const override = new URLSearchParams(loc.search).get("socketURL");
  if (override) return override;
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  // The page may be opened as /index.html or under a mount such as /dzone/; the daemon
  // accepts the socket at <mount>/ws.
  const base = loc.pathname.replace(/[^/]*$/, "").replace(/\/$/, "");
  return `${scheme}//${loc.host}${base}/ws`;
}

/** The origin a socket address names, as URL.origin writes it; null if it is not a ws: or wss: URL. */
export function socketOrigin(address) {
  try {
    const u = new URL(address);
    return u.protocol === "ws:" || u.protocol === "wss:" ? u.origin : null;
  } catch {
    return null;
  }
}

/** Whether a socket address is this page's own daemon: the same host and port, never a downgrade to ws: from https:. */
export function ownDaemon(address, loc = window.location) {
  let u;
  try {
    u = new URL(address);
  } catch {
    return false;
  }
  return u.host === loc.host && (u.protocol === "wss:" || (u.protocol === "ws:" && loc.protocol === "http:"));
}

/**
 * Whether the page may open this socket: its own daemon, or an origin its daemon lists for it
 * (sockets.json next to the page). Whatever the page is sent it shows, and a login typed on it
 * goes down this socket: anywhere else, a link could make it ask for a token on the daemon's own
 * origin and hand it to a stranger.
 */
export async function socketAllowed(address, loc = window.location) {
  if (ownDaemon(address, loc)) return true;
  const origin = socketOrigin(address);
  if (origin === null) return false;
  try {
    const res = await fetch(new URL("sockets.json", loc.href), { cache: "no-store" });
    if (!res.ok) return false;
    const listed = (await res.json()).sockets;
    return Array.isArray(listed) && listed.includes(origin);
  } catch {
    return false;
  }
}

/** Delay before reconnect attempt n (1-based): 0.5 s doubling to 10 s, each drawn from its upper half. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (attempt - 1));
  // Half fixed, half random: a restarted daemon is not hit by every page at the same instant.
  return ceiling / 2 + random() * (ceiling / 2);
}

export class Connection {
  /**
   * @param {string} url
   * @param {{frame(msg: object): void, state(s: {state: string, attempt: number, retryAt: number}): void,
   *          problem(text: string): void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.attempt = 0; // failed attempts since the last good connection
    this.retryTimer = 0;
    this.openTimer = 0;
    this.everOpened = false;
  }

  start() {
    this._open();
    // A laptop waking up or a network coming back: no reason to sit out the backoff.
    window.addEventListener("online", () => this.retryNow());
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(message) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  retryNow() {
    if (this.ws !== null) return;
    clearTimeout(this.retryTimer);
    this._open();
  }

  /** A frame arrived that the daemon only sends to a healthy socket: forget past failures. */
  healthy() {
    this.attempt = 0;
  }

  _open() {
    this.retryTimer = 0;
    this._report(this.everOpened ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      // Only a malformed address throws here; retrying the same string cannot help.
      this.handlers.problem(`The socket address ${this.url} is not a WebSocket URL (${err.message}).`);
      this._report("failed");
      return;
    }
    this.ws = ws;
    this.openTimer = setTimeout(() => ws.close(), OPEN_TIMEOUT_MS);
    ws.addEventListener("open", () => {
      clearTimeout(this.openTimer);
      if (!this.everOpened && performance.getEntriesByName("socket-open").length === 0) {
        performance.mark("socket-open");
      }
      this.everOpened = true;
      this._report("live");
    });
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return; // the daemon never sends this; a proxy's garbage is not worth a banner
      }
      if (msg && typeof msg.type === "string") this.handlers.frame(msg);
    });
    ws.addEventListener("close", () => {
      clearTimeout(this.openTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      this.attempt += 1;
      const delay = backoffDelay(this.attempt);
      this.retryTimer = setTimeout(() => this._open(), delay);
      this._report(this.everOpened ? "reconnecting" : "connecting", performance.now() + delay);
    });
  }

  _report(state, retryAt = 0) {
    this.handlers.state({ state, attempt: this.attempt, retryAt });
  }
}
