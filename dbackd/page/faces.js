// Members' faces: asked of this page's own daemon (faces/<server>/<uid>.png, which it fetches
// from Discord and keeps), a few at a time, each once. A 204 is "no face": the figure stays
// plain, as it is while a face loads or when one fails. Each face is cut round once, here,
// so the canvas only copies it.

const AT_ONCE = 4; // requests in flight; the daemon also limits how fast it asks Discord
const SIZE = 64; // px of the round face kept per member (drawn smaller)
const RETRY_MS = 15000; // a face not there yet (the daemon was busy) is asked again after this

export class Faces {
  /** @param {(uid: string, face: CanvasImageSource, url: string) => void} ready */
  constructor(ready) {
    this.ready = ready;
    this.server = null; // the server whose faces are asked for; null: none
    this.asked = null; // the server shown
    this.known = new Map(); // uid -> {state: "queued"|"loading"|"done"|"none", image, url}
    this.queue = [];
    this.running = 0;
    this.epoch = 0;
  }

  /** A new server: what was known of the last one is forgotten. */
  reset(server) {
    if (server === this.asked) return;
    this.asked = server;
    this.server = server;
    this.known.clear();
    this.queue.length = 0;
    this.epoch++;
  }

  /** The face of a uid if it is here; otherwise null, and it is asked for (once). */
  get(uid) {
    const known = this.known.get(uid);
    if (known !== undefined) return known.image;
    if (this.server === null) return null;
    this.known.set(uid, { state: "queued", image: null, url: null });
    this.queue.push(uid);
    this._pump();
    return null;
  }

  /** The face's URL on this daemon, once it loaded (for the list's <img>, from the browser's cache). */
  url(uid) {
    return this.known.get(uid)?.url ?? null;
  }

  loaded() {
    let n = 0;
    for (const k of this.known.values()) if (k.image !== null) n++;
    return n;
  }

  _pump() {
    while (this.running < AT_ONCE && this.queue.length > 0) {
      const uid = this.queue.shift();
      this.running++;
      this._load(uid, this.epoch).finally(() => {
        this.running--;
        this._pump();
      });
    }
  }

  /** The daemon has no faces for this server at all: nothing more is asked. */
  _off(epoch) {
    if (epoch !== this.epoch) return;
    this.server = null;
    this.queue.length = 0;
  }

  async _load(uid, epoch) {
    const url = new URL(`faces/${encodeURIComponent(this.server)}/${encodeURIComponent(uid)}.png`, location.href).href;
    let image = null;
    let retry = false;
    try {
      const res = await fetch(url);
      if (res.status === 200) image = await roundFace(await res.blob());
      else if (res.headers.get("X-Faces") === "off") this._off(epoch);
      else retry = res.status === 204;
    } catch {
      image = null; // not an image, or the daemon is away: a plain figure
    }
    if (epoch !== this.epoch) return;
    const known = this.known.get(uid);
    if (known === undefined) return;
    if (image === null) {
      known.state = "none";
      // A face the daemon could not give yet (its fetches are rate-limited) is asked again later.
      if (retry) setTimeout(() => { if (epoch === this.epoch) this.known.delete(uid); }, RETRY_MS);
      return;
    }
    known.state = "done";
    known.image = image;
    known.url = url;
    this.ready(uid, image, url);
  }
}

async function roundFace(blob) {
  const bitmap = await createImageBitmap(blob);
  const c = typeof OffscreenCanvas === "function" ? new OffscreenCanvas(SIZE, SIZE) : document.createElement("canvas");
  c.width = c.height = SIZE;
  const g = c.getContext("2d");
  g.beginPath();
  g.arc(SIZE / 2, SIZE / 2, SIZE / 2, 0, Math.PI * 2);
  g.clip();
  g.drawImage(bitmap, 0, 0, SIZE, SIZE);
  bitmap.close();
  return typeof c.transferToImageBitmap === "function" ? c.transferToImageBitmap() : c;
}
