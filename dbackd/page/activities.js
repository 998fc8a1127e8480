// What members are doing ("Playing …"), for the tooltip and the list: asked of this page's own
// daemon (activities/<server>.json) every few seconds while a public server is shown and the
// tab is visible. A server whose daemon shows no activities (the default) answers {"off": true}
// once, and is asked no more.

const EVERY_MS = 10000;

export class Activities {
  /** @param {(uid: string, text: string) => void} changed  called for each uid whose activity changed */
  constructor(changed) {
    this.changed = changed;
    this.server = null;
    this.now = new Map(); // uid -> text
    this.timer = 0;
    this.epoch = 0;
  }

  reset(server) {
    if (server === this.server) return;
    clearTimeout(this.timer);
    this.timer = 0;
    this.epoch++;
    const old = this.now;
    this.now = new Map();
    for (const uid of old.keys()) this.changed(uid, "");
    this.server = server;
    if (server !== null) this._poll(this.epoch);
  }

  of(uid) {
    return this.now.get(uid) ?? "";
  }

  async _poll(epoch) {
    let body = null;
    if (document.visibilityState !== "hidden") {
      try {
        const res = await fetch(new URL(`activities/${encodeURIComponent(this.server)}.json`, location.href), { cache: "no-store" });
        if (res.ok) body = await res.json();
      } catch {
        body = null; // the daemon is away: asked again on the next round
      }
    }
    if (epoch !== this.epoch) return;
    if (body !== null && body.off === true) return; // nothing to show here, ever
    if (body !== null && body.activities && typeof body.activities === "object") this._apply(body.activities);
    this.timer = setTimeout(() => this._poll(epoch), EVERY_MS);
  }

  _apply(activities) {
    const next = new Map();
    for (const [uid, text] of Object.entries(activities)) if (typeof text === "string" && text) next.set(uid, text);
    for (const [uid, text] of next) if (this.now.get(uid) !== text) this.changed(uid, text);
    for (const uid of this.now.keys()) if (!next.has(uid)) this.changed(uid, "");
    this.now = next;
  }
}
