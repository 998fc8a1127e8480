// The users in the DOM, for screen readers, keyboards and tests: a list of names and statuses
// and the counts in the legend. Changes are collected and written in one batch a few times a
// second, touching only the rows that changed, so a busy server does not rebuild the list.

import { STATUSES } from "./world.js";

const FLUSH_MS = 250;
const STATUS_WORDS = { online: "online", idle: "idle", dnd: "do not disturb", offline: "offline" };
const collator = new Intl.Collator(undefined, { sensitivity: "base", numeric: true });

export class People {
  /**
   * @param {{list: HTMLElement, legend: HTMLElement, count: HTMLElement}} els
   * @param {() => Map<string, object>} users  the world's users now
   * @param {{hover(uid: string|null): void, changedCounts(counts: object, total: number): void}} hooks
   */
  constructor(els, users, hooks) {
    this.els = els;
    this.users = users;
    this.hooks = hooks;
    this.rows = new Map(); // uid -> {li, name, status, color, nameEl, statusEl, swatch}
    this.sorted = []; // rows in list order (by name)
    this.dirty = new Set();
    this.timer = 0;
    this.rebuildDue = false;
    this.counts = { online: 0, idle: 0, dnd: 0, offline: 0 };
    this.countEls = {};
    for (const s of STATUSES) this.countEls[s] = els.legend.querySelector(`[data-count="${s}"]`);
    els.list.addEventListener("pointerover", (e) => {
      const li = e.target.closest("li[data-uid]");
      this.hooks.hover(li ? li.dataset.uid : null);
    });
    els.list.addEventListener("pointerleave", () => this.hooks.hover(null));
    els.list.addEventListener("focusin", (e) => {
      const li = e.target.closest("li[data-uid]");
      if (li) this.hooks.hover(li.dataset.uid);
    });
    els.list.addEventListener("focusout", () => this.hooks.hover(null));
  }

  /**
   * A whole new set of users (server-join): rebuilt in one go, just after the next frame, so a
   * big server's figures are on the canvas before a thousand rows are laid out.
   */
  reset() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.dirty.clear();
    this.rebuildDue = true;
    const run = () => {
      if (this.rebuildDue) this._rebuild(this.users());
    };
    requestAnimationFrame(() => setTimeout(run, 0));
    setTimeout(run, 150); // a hidden tab draws no frames
  }

  _rebuild(users) {
    this.rebuildDue = false;
    this.rows.clear();
    this.counts = { online: 0, idle: 0, dnd: 0, offline: 0 };
    const rows = [];
    for (const user of users.values()) {
      const row = this._row(user);
      this.rows.set(user.uid, row);
      rows.push(row);
      this.counts[user.status]++;
    }
    rows.sort((a, b) => collator.compare(a.name, b.name));
    this.sorted = rows;
    this.els.list.replaceChildren(...rows.map((r) => r.li));
    this._writeCounts();
  }

  /** Something about this uid changed (arrived, left, new status, colour or name). */
  touch(uid) {
    if (this.rebuildDue) return; // the rebuild reads the world as it is then
    this.dirty.add(uid);
    if (this.timer === 0) this.timer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush() {
    this.timer = 0;
    const users = this.users();
    for (const uid of this.dirty) {
      const user = users.get(uid);
      const row = this.rows.get(uid);
      if (user === undefined) {
        if (row !== undefined) this._remove(row);
      } else if (row === undefined) {
        this._insert(this._row(user));
        this.counts[user.status]++;
      } else {
        this._update(row, user);
      }
    }
    this.dirty.clear();
    this._writeCounts();
  }

  /** What a member is doing changed ("" for nothing). */
  activity(uid, text) {
    const row = this.rows.get(uid);
    if (row === undefined) return;
    row.activityEl.textContent = text;
    row.activityEl.title = text;
  }

  /** A member's face loaded (the image is in the browser's cache by now): their row shows it. */
  face(uid, url) {
    const row = this.rows.get(uid);
    if (row !== undefined) addFace(row.swatch, url);
  }

  /** Bring a row into view, as when its figure is clicked. */
  reveal(uid) {
    const row = this.rows.get(uid);
    if (row === undefined) return;
    row.li.scrollIntoView({ block: "nearest" });
    row.li.focus({ preventScroll: true });
  }

  _row(user) {
    const li = document.createElement("li");
    li.className = "person";
    li.tabIndex = -1;
    li.dataset.uid = user.uid;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.setAttribute("aria-hidden", "true");
    const nameEl = document.createElement("span");
    nameEl.className = "name";
    const statusEl = document.createElement("span");
    statusEl.className = "status";
    const activityEl = document.createElement("span");
    activityEl.className = "activity";
    li.append(swatch, nameEl, activityEl, statusEl);
    const doing = this.hooks.activityOf ? this.hooks.activityOf(user.uid) : "";
    activityEl.textContent = doing;
    activityEl.title = doing;
    const face = this.hooks.faceURL ? this.hooks.faceURL(user.uid) : null;
    if (face !== null) addFace(swatch, face);
    const row = { li, swatch, nameEl, statusEl, activityEl, name: "", status: "", color: "" };
    this._update(row, user);
    return row;
  }

  _update(row, user) {
    if (row.status !== user.status) {
      if (row.status !== "") this.counts[row.status]--, this.counts[user.status]++;
      row.status = user.status;
      row.li.dataset.status = user.status;
      row.statusEl.textContent = STATUS_WORDS[user.status];
    }
    if (row.color !== user.color) {
      row.color = user.color;
      row.li.dataset.color = user.color;
      // A CSSOM property, not a style attribute: allowed by a style-src without 'unsafe-inline'.
      row.swatch.style.setProperty("--c", user.color);
    }
    if (row.name !== user.name) {
      const placed = row.name !== "";
      row.name = user.name;
      row.nameEl.textContent = user.name;
      row.li.title = user.name;
      if (placed) {
        this._detach(row);
        this._insert(row);
      }
    }
  }

  _position(name) {
    let lo = 0, hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (collator.compare(this.sorted[mid].name, name) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  _insert(row) {
    const at = this._position(row.name);
    const before = this.sorted[at];
    this.sorted.splice(at, 0, row);
    this.rows.set(row.li.dataset.uid, row);
    this.els.list.insertBefore(row.li, before ? before.li : null);
  }

  _detach(row) {
    const i = this.sorted.indexOf(row);
    if (i !== -1) this.sorted.splice(i, 1);
    row.li.remove();
  }

  _remove(row) {
    this._detach(row);
    this.rows.delete(row.li.dataset.uid);
    this.counts[row.status]--;
  }

  _writeCounts() {
    let total = 0;
    for (const s of STATUSES) {
      total += this.counts[s];
      const text = String(this.counts[s]);
      if (this.countEls[s].textContent !== text) this.countEls[s].textContent = text;
    }
    this.els.count.textContent = `(${total})`;
    this.hooks.changedCounts(this.counts, total);
  }
}

/** The last things said, as an aria-live log; each entry tells whether its bubble is showing. */
export class MessageLog {
  constructor(list, empty, keep = 40) {
    this.list = list;
    this.empty = empty;
    this.keep = keep;
    this.entries = new Map(); // bubble id -> li
  }

  add(bubble, user) {
    const li = document.createElement("li");
    li.dataset.uid = user.uid;
    li.dataset.channel = bubble.channel;
    li.dataset.bubble = bubble.state;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = user.name;
    who.style.setProperty("--c", user.color);
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = bubble.text;
    li.append(who, " ", text);
    this.list.append(li);
    this.entries.set(bubble.id, li);
    while (this.list.children.length > this.keep) {
      const old = this.list.firstElementChild;
      old.remove();
      for (const [id, el] of this.entries) {
        if (el === old) {
          this.entries.delete(id);
          break;
        }
      }
    }
    this.empty.hidden = true;
    this.list.scrollTop = this.list.scrollHeight; // the log scrolls, never the page
  }

  /** A bubble started showing, ended or was skipped. */
  state(bubble) {
    const li = this.entries.get(bubble.id);
    if (li !== undefined) li.dataset.bubble = bubble.state;
  }

  clear() {
    this.list.replaceChildren();
    this.entries.clear();
    this.empty.hidden = false;
  }
}

function addFace(swatch, url) {
  if (swatch.querySelector("img.face") !== null) return;
  const img = document.createElement("img");
  img.className = "face";
  img.alt = "";
  img.decoding = "async";
  img.src = url;
  swatch.append(img);
}
