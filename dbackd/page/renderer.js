// The terrarium on a canvas: an isometric island, a figure per user that wanders on it, and
// speech bubbles. One requestAnimationFrame loop draws everything. Everything costly (ground,
// figure sprites, name labels, bubbles) is drawn once into offscreen canvases and only copied
// in the loop, which creates no objects, so a thousand figures stay smooth.

import { Chat } from "./chat.js";

const TILE_W = 40; // world units at zoom 1
const TILE_H = 20;
const SLAB = 16; // thickness of the island's earth
const FIG_W = 22; // figure box in CSS px at figure scale 1; the feet are at (11, 27)
const FIG_H = 29;
const FOOT_X = 11;
const FOOT_Y = 27;
const FACE_CX = 11; // a face's centre and radius on the figure's dome (figure units)
const FACE_CY = 13.5;
const FACE_R = 6.5;
const NAMES_ALWAYS_UP_TO = 30;
const GROUND_MAX_PX = 4096; // bigger ground canvases cost more memory than sharpness is worth
const SPAWN_MS = 560;
const LEAVE_MS = 480;
const PULSE_MS = 560;
const SPRITE_SETS_MAX = 2000; // colour-and-status pairs kept drawn (four bitmaps each); real servers have a few dozen

export const STATUS_COLORS = { online: "#43b581", idle: "#faa61a", dnd: "#f04747", offline: "#8a93a3" };
const BADGE_RING = "#1b2130";

// How each status moves: walking speed (tiles/s), rest between walks (ms), how far a walk goes.
const GAIT = {
  online: { speed: 1.3, restMin: 1500, restMax: 5000, range: 3 },
  idle: { speed: 0.55, restMin: 5000, restMax: 14000, range: 1.5 },
  dnd: { speed: 1.9, restMin: 700, restMax: 2800, range: 2 },
  offline: null, // asleep where they stand
};

// -- colour helpers (used when sprites are made, never per frame) ----------------------------
function rgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}
function mix(hex, other, t) {
  const a = rgb(hex), b = rgb(other);
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
function hashString(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
/** A small seeded generator, so a server's island looks the same at every visit. */
function seeded(seed) {
  let t = seed >>> 0;
  return () => {
    t = (t + 0x6d2b79f5) >>> 0;
    let r = Math.imul(t ^ (t >>> 15), 1 | t);
    r ^= r + Math.imul(r ^ (r >>> 7), 61 | r);
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}
function easeOutBounce(t) {
  const n = 7.5625, d = 2.75;
  if (t < 1 / d) return n * t * t;
  if (t < 2 / d) return n * (t -= 1.5 / d) * t + 0.75;
  if (t < 2.5 / d) return n * (t -= 2.25 / d) * t + 0.9375;
  return n * (t -= 2.625 / d) * t + 0.984375;
}
const OFFSCREEN = typeof OffscreenCanvas === "function";
function surface(w, h) {
  const width = Math.max(1, Math.ceil(w)), height = Math.max(1, Math.ceil(h));
  if (OFFSCREEN) return new OffscreenCanvas(width, height);
  const c = document.createElement("canvas");
  c.width = width;
  c.height = height;
  return c;
}
/** Drawing from an ImageBitmap skips the snapshot that a canvas source costs on every drawImage. */
function freeze(c) {
  return OFFSCREEN ? c.transferToImageBitmap() : c;
}
function release(image) {
  if (image !== null && typeof image.close === "function") image.close();
}
let probeContext = null;
function probe(font) {
  if (probeContext === null) probeContext = surface(1, 1).getContext("2d");
  probeContext.font = font;
  return probeContext;
}

// -- sprites -----------------------------------------------------------------------------------
function drawBadge(g, status, x, y, r) {
  g.fillStyle = BADGE_RING;
  g.beginPath(); g.arc(x, y, r * 1.35, 0, Math.PI * 2); g.fill();
  const c = STATUS_COLORS[status];
  if (status === "online") {
    g.fillStyle = c;
    g.beginPath(); g.arc(x, y, r, 0, Math.PI * 2); g.fill();
  } else if (status === "idle") {
    g.fillStyle = c;
    g.beginPath(); g.arc(x, y, r, 0, Math.PI * 2); g.fill();
    g.fillStyle = BADGE_RING; // a bite out of the disc: the moon of Discord's idle
    g.beginPath(); g.arc(x - r * 0.45, y - r * 0.45, r * 0.68, 0, Math.PI * 2); g.fill();
  } else if (status === "dnd") {
    g.fillStyle = c;
    g.beginPath(); g.arc(x, y, r, 0, Math.PI * 2); g.fill();
    g.fillStyle = "#fff";
    g.fillRect(x - r * 0.6, y - r * 0.2, r * 1.2, r * 0.4);
  } else {
    g.fillStyle = c;
    g.beginPath(); g.arc(x, y, r, 0, Math.PI * 2); g.fill();
    g.fillStyle = BADGE_RING;
    g.beginPath(); g.arc(x, y, r * 0.5, 0, Math.PI * 2); g.fill();
  }
}

/** One figure: a round little creature in the user's colour, its status on a badge; with its
 *  shadow when it stands (one drawImage instead of two), without while it hops. */
function makeFigure(color, status, facing, s, shadow) {
  const c = surface((FIG_W + 2) * s, (FIG_H + 4) * s);
  const g = c.getContext("2d");
  g.scale(s, s);
  g.translate(1, 1);
  if (shadow) paintShadow(g, FOOT_X - 10, FOOT_Y - 3.5);
  const asleep = status === "offline";
  const base = asleep ? mix(color, "#7d8595", 0.55) : mix(color, color, 0);
  const top = asleep ? mix(color, "#9aa2b0", 0.5) : mix(color, "#ffffff", 0.3);
  const bottom = asleep ? mix(color, "#4a5060", 0.55) : mix(color, "#000000", 0.2);
  const line = mix(color, "#000000", 0.5);
  g.globalAlpha = asleep ? 0.55 : 1;

  // feet, then the body over them
  g.fillStyle = bottom;
  g.beginPath(); g.ellipse(7.5, 26.2, 3, 1.8, 0, 0, Math.PI * 2); g.fill();
  g.beginPath(); g.ellipse(14.5, 26.2, 3, 1.8, 0, 0, Math.PI * 2); g.fill();
  const body = g.createLinearGradient(0, 6, 0, 26);
  body.addColorStop(0, top);
  body.addColorStop(0.55, base);
  body.addColorStop(1, bottom);
  g.fillStyle = body;
  g.strokeStyle = line;
  g.lineWidth = Math.max(1 / s, 0.9);
  g.beginPath();
  g.roundRect(3, 6, 16, 20, [8, 8, 6, 6]);
  g.fill();
  g.stroke();
  // a soft shine on the dome
  g.fillStyle = "rgba(255,255,255,0.33)";
  g.beginPath(); g.ellipse(8 - facing * 0.8, 10.5, 2.2, 3, -0.4, 0, Math.PI * 2); g.fill();

  // eyes look where the figure walks; asleep they are closed
  const ex = facing * 1.4;
  g.fillStyle = "#1d2130";
  g.strokeStyle = "#1d2130";
  if (asleep) {
    g.lineWidth = Math.max(1.1, 1 / s);
    g.beginPath(); g.arc(8.6 + ex, 14.2, 1.5, 0.15 * Math.PI, 0.85 * Math.PI); g.stroke();
    g.beginPath(); g.arc(13.4 + ex, 14.2, 1.5, 0.15 * Math.PI, 0.85 * Math.PI); g.stroke();
  } else {
    g.beginPath(); g.ellipse(8.6 + ex, 14.5, 1.35, 1.9, 0, 0, Math.PI * 2); g.fill();
    g.beginPath(); g.ellipse(13.4 + ex, 14.5, 1.35, 1.9, 0, 0, Math.PI * 2); g.fill();
    g.fillStyle = "rgba(255,255,255,0.9)";
    g.beginPath(); g.arc(9 + ex, 13.8, 0.5, 0, Math.PI * 2); g.fill();
    g.beginPath(); g.arc(13.8 + ex, 13.8, 0.5, 0, Math.PI * 2); g.fill();
    g.fillStyle = "rgba(255,120,140,0.35)"; // cheeks
    g.beginPath(); g.ellipse(6.6 + ex, 17.6, 1.4, 0.9, 0, 0, Math.PI * 2); g.fill();
    g.beginPath(); g.ellipse(15.4 + ex, 17.6, 1.4, 0.9, 0, 0, Math.PI * 2); g.fill();
  }
  g.globalAlpha = 1;
  drawBadge(g, status, 17.5, 5.2, 3.3);
  return freeze(c);
}

function paintShadow(g, x, y) {
  const grad = g.createRadialGradient(x + 10, y + 3.5, 0.5, x + 10, y + 3.5, 9);
  grad.addColorStop(0, "rgba(24,40,28,0.38)");
  grad.addColorStop(1, "rgba(24,40,28,0)");
  g.fillStyle = grad;
  g.beginPath(); g.ellipse(x + 10, y + 3.5, 9.5, 3.3, 0, 0, Math.PI * 2); g.fill();
}

function makeShadow(s) {
  const c = surface(20 * s, 7 * s);
  const g = c.getContext("2d");
  g.scale(s, s);
  paintShadow(g, 0, 0);
  return freeze(c);
}

function makeLabel(name, status, withStatus, dpr, activity = "") {
  const font = `600 ${12 * dpr}px system-ui, "Segoe UI", Roboto, "DejaVu Sans", sans-serif`;
  const small = `500 ${11 * dpr}px system-ui, "Segoe UI", Roboto, "DejaVu Sans", sans-serif`;
  const text = name.length > 32 ? name.slice(0, 31) + "…" : name;
  const nameW = probe(font).measureText(text).width;
  let statusW = 0;
  const statusWord = status === "dnd" ? "do not disturb" : status;
  const statusText = withStatus ? (activity ? `${statusWord} · ${activity}` : statusWord) : "";
  if (withStatus) statusW = probe(small).measureText(statusText).width + 16 * dpr;
  const padX = 7 * dpr, h = 20 * dpr;
  const c = surface(nameW + statusW + padX * 2, h + 2 * dpr);
  const g = c.getContext("2d");
  g.fillStyle = "rgba(17,21,33,0.86)";
  g.beginPath(); g.roundRect(0, 0, c.width, h, 7 * dpr); g.fill();
  g.textBaseline = "middle";
  g.font = font;
  g.fillStyle = "#f4f6fb";
  g.fillText(text, padX, h / 2 + 0.5 * dpr);
  if (withStatus) {
    const x = padX + nameW + 8 * dpr;
    g.fillStyle = STATUS_COLORS[status];
    g.beginPath(); g.arc(x + 3 * dpr, h / 2, 3 * dpr, 0, Math.PI * 2); g.fill();
    g.font = small;
    g.fillStyle = "#aab3c5";
    g.fillText(statusText, x + 9 * dpr, h / 2 + 0.5 * dpr);
  }
  return freeze(c);
}

function wrap(g, text, maxWidth, maxLines) {
  const words = text.split(/\s+/).filter(Boolean);
  const lines = [];
  let line = "";
  for (const word of words) {
    const attempt = line ? line + " " + word : word;
    if (g.measureText(attempt).width <= maxWidth || !line) {
      line = attempt;
    } else {
      lines.push(line);
      line = word;
    }
    if (lines.length === maxLines) break;
  }
  if (lines.length < maxLines && line) lines.push(line);
  if (lines.length === maxLines && lines.join(" ").length < words.join(" ").length) {
    lines[maxLines - 1] = lines[maxLines - 1].replace(/.$/, "…");
  }
  // a single word longer than the bubble is cut rather than overflowing
  return lines.map((l) => {
    if (g.measureText(l).width <= maxWidth) return l;
    while (l.length > 1 && g.measureText(l + "…").width > maxWidth) l = l.slice(0, -1);
    return l + "…";
  });
}

function makeBubble(text, dpr) {
  const font = `500 ${13 * dpr}px system-ui, "Segoe UI", Roboto, "DejaVu Sans", sans-serif`;
  const m = probe(font);
  const lines = wrap(m, text, 190 * dpr, 4);
  const lineH = 17 * dpr, padX = 9 * dpr, padY = 6 * dpr, tail = 7 * dpr;
  let w = 0;
  for (const l of lines) w = Math.max(w, m.measureText(l).width);
  const bw = Math.ceil(w + padX * 2), bh = Math.ceil(lines.length * lineH + padY * 2);
  const c = surface(bw + 4 * dpr, bh + tail + 4 * dpr);
  const g = c.getContext("2d");
  g.translate(2 * dpr, 1 * dpr);
  g.shadowColor = "rgba(10,14,30,0.28)";
  g.shadowBlur = 4 * dpr;
  g.shadowOffsetY = 1.5 * dpr;
  g.fillStyle = "#fffdf6";
  g.beginPath();
  g.roundRect(0, 0, bw, bh, 9 * dpr);
  g.moveTo(bw / 2 - tail, bh - 1);
  g.lineTo(bw / 2, bh + tail);
  g.lineTo(bw / 2 + tail, bh - 1);
  g.fill();
  g.shadowColor = "transparent";
  g.fillStyle = "#20263a";
  g.font = font;
  g.textBaseline = "middle";
  lines.forEach((l, i) => g.fillText(l, padX, padY + lineH * (i + 0.5)));
  return freeze(c);
}

// -- the island ----------------------------------------------------------------------------------
function makeGround(size, gs, seedText) {
  const rand = seeded(hashString(seedText));
  const hw = (TILE_W / 2) * gs, hh = (TILE_H / 2) * gs;
  const pad = 24 * gs + 8;
  const c = surface(size * TILE_W * gs + pad * 2, (size * TILE_H + SLAB) * gs + pad * 2);
  const g = c.getContext("2d");
  const ox = c.width / 2, oy = pad; // screen position of the island's top corner
  const at = (i, j) => [ox + (i - j) * hw, oy + (i + j) * hh];
  const [lx, ly] = at(0, size), [bx, by] = at(size, size), [rx, ry] = at(size, 0), [tx, ty] = at(0, 0);

  // a soft shadow just under the island, so it sits on the scene instead of floating in it
  const drop = (SLAB + 10) * gs;
  g.save();
  g.fillStyle = "rgba(8,12,28,0.4)";
  g.filter = `blur(${Math.max(3, 8 * gs)}px)`;
  g.beginPath();
  g.moveTo(lx, ly + drop); g.lineTo(bx, by + drop); g.lineTo(rx, ry + drop); g.lineTo(tx, ty + drop);
  g.closePath();
  g.fill();
  g.restore();
  const depth = SLAB * gs;
  let face = g.createLinearGradient(0, ly, 0, by + depth);
  face.addColorStop(0, "#8c6b4e");
  face.addColorStop(1, "#6a4e3a");
  g.fillStyle = face;
  g.beginPath(); g.moveTo(lx, ly); g.lineTo(bx, by); g.lineTo(bx, by + depth); g.lineTo(lx, ly + depth); g.closePath(); g.fill();
  face = g.createLinearGradient(0, ry, 0, by + depth);
  face.addColorStop(0, "#7a5b42");
  face.addColorStop(1, "#5a412f");
  g.fillStyle = face;
  g.beginPath(); g.moveTo(bx, by); g.lineTo(rx, ry); g.lineTo(rx, ry + depth); g.lineTo(bx, by + depth); g.closePath(); g.fill();
  // strata lines in the earth
  g.strokeStyle = "rgba(40,26,16,0.25)";
  g.lineWidth = Math.max(1, gs);
  for (const f of [0.45, 0.75]) {
    g.beginPath(); g.moveTo(lx, ly + depth * f); g.lineTo(bx, by + depth * f); g.lineTo(rx, ry + depth * f); g.stroke();
  }

  // Grass tiles: two greens mixed by a gentle noise, lighter towards the middle. One pixel
  // per tile in a tiny image, drawn through the isometric transform: a big island is one
  // drawImage rather than thousands of paths.
  const light = [156, 207, 132], dark = [112, 172, 102];
  const tiles = surface(size, size);
  const tg = tiles.getContext("2d");
  const img = tg.createImageData(size, size);
  const cx = size / 2;
  for (let j = 0; j < size; j++) {
    for (let i = 0; i < size; i++) {
      const d = Math.hypot(i + 0.5 - cx, j + 0.5 - cx) / (size * 0.72);
      const wave = 0.5 + 0.25 * Math.sin(i * 0.55 + rand() * 0.6) * Math.cos(j * 0.45);
      const t = Math.min(1, Math.max(0, wave * 0.55 + d * 0.55 + (rand() - 0.5) * 0.16));
      const p = (j * size + i) * 4;
      img.data[p] = light[0] + (dark[0] - light[0]) * t;
      img.data[p + 1] = light[1] + (dark[1] - light[1]) * t;
      img.data[p + 2] = light[2] + (dark[2] - light[2]) * t;
      img.data[p + 3] = 255;
    }
  }
  tg.putImageData(img, 0, 0);
  g.save();
  g.setTransform(hw, hh, -hw, hh, ox, oy);
  g.imageSmoothingEnabled = false;
  g.drawImage(tiles, 0, 0);
  g.restore();
  if (hw > 6) {
    g.strokeStyle = "rgba(255,255,255,0.07)";
    g.lineWidth = 1;
    g.beginPath();
    for (let k = 1; k < size; k++) {
      let [x0, y0] = at(k, 0), [x1, y1] = at(k, size);
      g.moveTo(x0, y0); g.lineTo(x1, y1);
      [x0, y0] = at(0, k);
      [x1, y1] = at(size, k);
      g.moveTo(x0, y0); g.lineTo(x1, y1);
    }
    g.stroke();
  }
  // a lit rim along the front edges
  g.strokeStyle = "rgba(200,240,180,0.55)";
  g.lineWidth = Math.max(1, 1.5 * gs);
  g.beginPath(); g.moveTo(lx, ly); g.lineTo(bx, by); g.lineTo(rx, ry); g.stroke();
  g.strokeStyle = "rgba(255,255,255,0.18)";
  g.beginPath(); g.moveTo(lx, ly); g.lineTo(tx, ty); g.lineTo(rx, ry); g.stroke();

  // tufts, flowers and pebbles, a few per hundred tiles, each kind in one path
  const petals = ["#ffe08a", "#ffb3c7", "#ffffff", "#c9b6ff"];
  const tufts = new Path2D(), pebbles = new Path2D(), shine = new Path2D();
  const flowers = petals.map(() => new Path2D());
  const dot = Math.max(0.7, 1.3 * gs);
  // on a far-away island they would be specks of noise
  const sparse = hw < 4 ? 0 : 1;
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < size; j++) {
      const roll = rand() / sparse;
      const [x, y] = at(i + 0.2 + rand() * 0.6, j + 0.2 + rand() * 0.6);
      if (roll < 0.07) {
        for (let k = -1; k <= 1; k++) {
          tufts.moveTo(x + k * 2 * gs, y);
          tufts.lineTo(x + k * 3.2 * gs, y - (4 + (k === 0 ? 2 : 0)) * gs);
        }
      } else if (roll < 0.1) {
        const f = flowers[Math.floor(rand() * petals.length)];
        for (let k = 0; k < 3; k++) {
          const fx = x + (k - 1) * 2.6 * gs, fy = y - (k % 2) * 1.6 * gs;
          f.moveTo(fx + dot, fy);
          f.arc(fx, fy, dot, 0, Math.PI * 2);
        }
      } else if (roll < 0.115) {
        pebbles.moveTo(x + 2.6 * gs, y);
        pebbles.ellipse(x, y, 2.6 * gs, 1.5 * gs, 0, 0, Math.PI * 2);
        shine.moveTo(x + 0.5 * gs, y - 0.5 * gs);
        shine.ellipse(x - 0.6 * gs, y - 0.5 * gs, 1.1 * gs, 0.6 * gs, 0, 0, Math.PI * 2);
      }
    }
  }
  g.strokeStyle = "rgba(60,120,60,0.75)";
  g.lineWidth = Math.max(0.8, 1.2 * gs);
  g.stroke(tufts);
  flowers.forEach((f, k) => {
    g.fillStyle = petals[k];
    g.fill(f);
  });
  g.fillStyle = "rgba(150,160,150,0.9)";
  g.fill(pebbles);
  g.fillStyle = "rgba(255,255,255,0.35)";
  g.fill(shine);
  return { canvas: c, ox, oy, gs };
}

/** The sky and the island in one opaque picture: one copy a frame instead of a clear and a blend. */
function makeBackdrop(w, h, ground, gx, gy, k) {
  const c = surface(w, h);
  const g = c.getContext("2d");
  const sky = g.createLinearGradient(0, 0, 0, h);
  sky.addColorStop(0, "#222d4a");
  sky.addColorStop(0.6, "#2f4660");
  sky.addColorStop(1, "#36546a");
  g.fillStyle = sky;
  g.fillRect(0, 0, w, h);
  const rand = seeded(7);
  for (let i = 0; i < 60; i++) {
    g.fillStyle = `rgba(255,255,255,${0.04 + rand() * 0.2})`;
    g.beginPath();
    g.arc(rand() * w, rand() * h * 0.45, 0.5 + rand() * 1.1, 0, Math.PI * 2);
    g.fill();
  }
  g.save();
  g.translate(w / 2, h * 0.55);
  g.scale(1, (0.5 * h) / (0.6 * w));
  const glow = g.createRadialGradient(0, 0, 0, 0, 0, 0.6 * w);
  glow.addColorStop(0, "rgba(140,200,170,0.17)");
  glow.addColorStop(1, "rgba(140,200,170,0)");
  g.fillStyle = glow;
  g.fillRect(-w, -w, 2 * w, 2 * w);
  g.restore();
  const src = ground.canvas;
  if (Math.abs(k - 1) < 1e-6) g.drawImage(src, Math.round(gx), Math.round(gy));
  else g.drawImage(src, gx, gy, src.width * k, src.height * k);
  return freeze(c);
}

// -- actors ------------------------------------------------------------------------------------
class Actor {
  constructor(user, size, bornAt, rand) {
    this.uid = user.uid;
    this.user = user;
    this.x = 0.5 + rand() * (size - 1);
    this.y = 0.5 + rand() * (size - 1);
    this.tx = this.x;
    this.ty = this.y;
    this.walking = false;
    this.landing = false; // reached the target, finishing the hop in the air
    this.nextMove = bornAt + SPAWN_MS + rand() * 3000;
    this.phase = 0;
    this.facing = rand() < 0.5 ? -1 : 1;
    this.born = bornAt;
    this.leaving = 0;
    this.pulse = 0;
    this.depth = this.x + this.y;
    this.face = undefined; // its face once loaded; null while it loads, or with none
    this.activity = ""; // what they are doing, on the hovered label
    this.sprite = null; // facing right, while hopping (its shadow is drawn apart, on the ground)
    this.spriteFlip = null; // facing left
    this.still = null; // facing right, standing, shadow included
    this.stillFlip = null;
    this.spriteEpoch = -1;
    this.label = null;
    this.labelRich = false; // the label shows the status too (hovered)
    this.labelHiddenUntil = 0;
    this.sx = -1e9; // where it was last drawn (device px), for hovering
    this.sy = -1e9;
  }
}

export class Renderer {
  constructor(canvasEl, chat, { onHover, onPick, faces, activityOf } = {}) {
    this.canvas = canvasEl;
    this.faces = faces || null; // members' faces, drawn over their figures once loaded
    this.activityOf = activityOf || (() => "");
    this.withFaces = 0; // figures drawn with a face in the last frame
    this.ctx = canvasEl.getContext("2d", { alpha: false });
    this.chat = chat;
    this.onHover = onHover || (() => {});
    this.onPick = onPick || (() => {});
    this.actors = new Map();
    this.order = []; // actors back to front
    this.size = 8;
    this.seedText = "";
    this.rand = seeded(1);
    this.dpr = 1;
    this.zoom = 1; // relative to fitting the island in view
    this.panX = 0; // CSS px
    this.panY = 0;
    this.scale = 1; // device px per world unit
    this.figScale = 1;
    this.ground = null;
    this.groundWanted = 0;
    this.backdrop = null;
    this.bdX = 0; // where the backdrop was composed for
    this.bdY = 0;
    this.bdScale = 0;
    this.bdGround = null; // time after which a re-render at the current scale is due
    this.sprites = new Map(); // "color|status|facing" -> canvas, for the current figure scale
    this.spriteScale = 0;
    this.spriteEpoch = 0;
    this.shadow = null;
    this.hovered = null;
    this.highlighted = null;
    this.pointerX = -1;
    this.pointerY = -1;
    this.pointerIn = false;
    this.drag = null;
    this.firstFigure = false;
    this.resting = false; // no live updates: drawn dimmed, and at a lower rate
    this.veil = 0; // 0..1, eased towards resting
    this.present = 0; // actors not leaving
    this.arriving = 0;
    this.frames = 0;
    this.frameMs = new Float32Array(240);
    this.labelRects = new Float32Array(4 * (NAMES_ALWAYS_UP_TO + 1));
    this.tick = 0;
    this.reduceMotion = window.matchMedia?.("(prefers-reduced-motion: reduce)").matches === true;
    this.last = performance.now();
    this._frame = this._frame.bind(this);
    this._bindInput();
    new ResizeObserver(() => this._resize()).observe(canvasEl);
    this._resize();
  }

  start() {
    requestAnimationFrame(this._frame);
  }

  /** While the page gets no updates, the world is shown dimmed and drawn at a quarter of the rate. */
  rest(resting) {
    this.resting = resting;
  }

  // -- what the world tells us ------------------------------------------------------------
  /** A fresh server-join. For the server already shown it is reconciled, so nobody jumps. */
  reset(users, sameServer, seedText) {
    const now = performance.now();
    if (!sameServer) {
      this.actors.clear();
      this.order.length = 0;
      this.present = 0;
      this.seedText = seedText;
      this.rand = seeded(hashString(seedText) ^ 0x9e3779b9);
      this.zoom = 1;
      this.panX = this.panY = 0;
      this.hovered = this.highlighted = null;
    }
    const n = users.size;
    const size = Math.max(8, Math.ceil(3.3 * Math.sqrt(n)));
    if (size !== this.size || !sameServer) {
      this.size = size;
      this.ground = null;
      const max = size - 0.5;
      for (const actor of this.actors.values()) { // a smaller island after a rejoin: nobody off the edge
        actor.x = Math.min(max, actor.x);
        actor.y = Math.min(max, actor.y);
        actor.tx = Math.min(max, actor.tx);
        actor.ty = Math.min(max, actor.ty);
        actor.depth = actor.x + actor.y;
      }
    }
    const stagger = Math.min(900, 60 + n * 2);
    let first = true;
    for (const user of users.values()) {
      const actor = this.actors.get(user.uid);
      if (actor !== undefined && !actor.leaving) {
        const statusChanged = actor.user.status !== user.status;
        const looksChanged = statusChanged || actor.user.color !== user.color || actor.user.name !== user.name;
        actor.user = user;
        if (looksChanged) this._restyle(actor, statusChanged, now);
        continue;
      }
      if (actor !== undefined) this._drop(actor);
      this._spawn(user, now + (first ? 0 : this.rand() * stagger));
      first = false;
    }
    for (const actor of this.actors.values()) {
      if (!users.has(actor.uid) && !actor.leaving) this._leave(actor, now);
    }
    this._layout();
  }

  add(user) {
    const existing = this.actors.get(user.uid);
    if (existing !== undefined) this._drop(existing);
    this._spawn(user, performance.now());
  }

  changed(user, change) {
    const actor = this.actors.get(user.uid);
    if (actor === undefined) return;
    actor.user = user;
    this._restyle(actor, change.status, performance.now());
  }

  /** What a member is doing changed: their hovered label says it. */
  activity(uid, text) {
    const actor = this.actors.get(uid);
    if (actor === undefined || actor.activity === text) return;
    actor.activity = text;
    release(actor.label);
    actor.label = null;
  }

  /** A member's face arrived: their figure wears it from the next frame. */
  faceReady(uid, face) {
    const actor = this.actors.get(uid);
    if (actor !== undefined) actor.face = face;
  }

  remove(uid) {
    const actor = this.actors.get(uid);
    if (actor !== undefined && !actor.leaving) this._leave(actor, performance.now());
  }

  highlight(uid) {
    this.highlighted = uid === null ? null : this.actors.get(uid) || null;
  }

  zoomBy(factor, cx = this.canvas.clientWidth / 2, cy = this.canvas.clientHeight / 2) {
    const next = Math.min(10, Math.max(0.4, this.zoom * factor));
    const k = next / this.zoom;
    const w = this.canvas.clientWidth / 2, h = this.canvas.clientHeight / 2;
    // keep the point under the pointer where it is
    this.panX = cx - w - (cx - w - this.panX) * k;
    this.panY = cy - h - (cy - h - this.panY) * k;
    this.zoom = next;
    this._layout();
  }

  fit() {
    this.zoom = 1;
    this.panX = this.panY = 0;
    this._layout();
  }

  stats() {
    let sum = 0, max = 0;
    const n = Math.min(this.frames, this.frameMs.length);
    for (let i = 0; i < n; i++) {
      sum += this.frameMs[i];
      if (this.frameMs[i] > max) max = this.frameMs[i];
    }
    return { frames: this.frames, figures: this.present, arriving: this.arriving, faces: this.withFaces,
             frameMsAvg: n ? sum / n : 0, frameMsMax: max };
  }

  // -- actors -----------------------------------------------------------------------------
  _spawn(user, at) {
    const actor = new Actor(user, this.size, at, this.rand);
    actor.activity = this.activityOf(user.uid);
    this.actors.set(user.uid, actor);
    this.order.push(actor);
    this.present++;
  }

  _leave(actor, now) {
    actor.leaving = now;
    actor.walking = false;
    this.present--;
    if (this.hovered === actor) this._setHovered(null);
    if (this.highlighted === actor) this.highlighted = null;
  }

  /** Gone at once (replaced by a new actor with the same uid). */
  _drop(actor) {
    if (!actor.leaving) this.present--;
    this.actors.delete(actor.uid);
    const i = this.order.indexOf(actor);
    if (i !== -1) this.order.splice(i, 1);
    if (this.hovered === actor) this._setHovered(null);
    if (this.highlighted === actor) this.highlighted = null;
  }

  _restyle(actor, statusChanged, now) {
    actor.spriteEpoch = -1;
    release(actor.label);
    actor.label = null;
    if (statusChanged) {
      actor.pulse = now;
      if (actor.user.status === "offline") {
        actor.walking = false;
        actor.landing = actor.phase > 0;
      } else {
        actor.nextMove = Math.min(actor.nextMove, now + 400 + this.rand() * 1200);
      }
    }
  }

  _sprites(actor) {
    const u = actor.user;
    const key = u.color + "|" + u.status;
    let set = this.sprites.get(key);
    if (set === undefined) {
      if (this.sprites.size >= SPRITE_SETS_MAX) this._forgetSprites(); // a server of a thousand colours
      const s = this.spriteScale;
      set = [makeFigure(u.color, u.status, 1, s, false), makeFigure(u.color, u.status, -1, s, false),
             makeFigure(u.color, u.status, 1, s, true), makeFigure(u.color, u.status, -1, s, true)];
      this.sprites.set(key, set);
    }
    actor.sprite = set[0];
    actor.spriteFlip = set[1];
    actor.still = set[2];
    actor.stillFlip = set[3];
    actor.spriteEpoch = this.spriteEpoch;
  }

  /** Drop every cached sprite; actors fetch theirs again when next drawn. */
  _forgetSprites() {
    for (const set of this.sprites.values()) set.forEach(release);
    this.sprites.clear();
    this.spriteEpoch++;
  }

  _move(a, dt, now) {
    if (a.leaving || now < a.born + SPAWN_MS) return;
    const gait = GAIT[a.user.status];
    const hopRate = 9; // radians of hop phase per second while walking
    if (a.landing) {
      const before = Math.floor(a.phase / Math.PI);
      a.phase += hopRate * dt;
      if (Math.floor(a.phase / Math.PI) !== before) {
        a.phase = 0;
        a.landing = false;
      }
      return;
    }
    if (!a.walking) {
      if (gait === null || now < a.nextMove) return;
      const r = gait.range;
      const max = this.size - 0.5;
      a.tx = Math.min(max, Math.max(0.5, a.x + (this.rand() * 2 - 1) * r));
      a.ty = Math.min(max, Math.max(0.5, a.y + (this.rand() * 2 - 1) * r));
      a.walking = true;
      return;
    }
    const dx = a.tx - a.x, dy = a.ty - a.y;
    const dist = Math.sqrt(dx * dx + dy * dy);
    const step = (gait === null ? 1 : gait.speed) * dt;
    if (dx - dy > 0.01) a.facing = 1;
    else if (dx - dy < -0.01) a.facing = -1;
    if (dist <= step || gait === null) {
      a.x = a.tx;
      a.y = a.ty;
      a.walking = false;
      a.landing = a.phase > 0;
      if (gait !== null) a.nextMove = now + gait.restMin + this.rand() * (gait.restMax - gait.restMin);
    } else {
      a.x += (dx / dist) * step;
      a.y += (dy / dist) * step;
      a.phase += hopRate * dt;
    }
    a.depth = a.x + a.y;
  }

  // -- layout and input -------------------------------------------------------------------------
  _resize() {
    const dpr = Math.min(2, window.devicePixelRatio || 1);
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (w !== this.canvas.width || h !== this.canvas.height || dpr !== this.dpr) {
      if (dpr !== this.dpr) for (const a of this.actors.values()) { release(a.label); a.label = null; }
      this.dpr = dpr;
      this.canvas.width = w;
      this.canvas.height = h;
      this._layout();
    }
  }

  _layout() {
    const cw = this.canvas.width, ch = this.canvas.height;
    const worldW = this.size * TILE_W, worldH = this.size * TILE_H + SLAB + FIG_H;
    const fit = Math.min((cw * 0.9) / worldW, (ch * 0.86) / worldH, 2.6 * this.dpr);
    this.scale = fit * this.zoom;
    // Figures shrink with the island, but not below a size that still reads as a figure.
    this.figScale = Math.min(2.6 * this.dpr, Math.max(0.5 * this.dpr, this.scale * 0.95));
    const q = Math.round(this.figScale * 8) / 8;
    if (q !== this.spriteScale) {
      this.spriteScale = q;
      this._forgetSprites();
      release(this.shadow);
      this.shadow = makeShadow(q);
    }
    this.groundWanted = performance.now() + (this.ground === null ? 0 : 140);
  }

  _bindInput() {
    const c = this.canvas;
    c.addEventListener("pointermove", (e) => {
      this.pointerIn = true;
      this.pointerX = e.offsetX * this.dpr;
      this.pointerY = e.offsetY * this.dpr;
      if (this.drag !== null) {
        this.panX = this.drag.panX + (e.clientX - this.drag.x);
        this.panY = this.drag.panY + (e.clientY - this.drag.y);
        if (Math.abs(e.clientX - this.drag.x) + Math.abs(e.clientY - this.drag.y) > 4) this.drag.moved = true;
      }
    });
    c.addEventListener("pointerleave", () => {
      this.pointerIn = false;
      this._setHovered(null);
    });
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      this.drag = { x: e.clientX, y: e.clientY, panX: this.panX, panY: this.panY, moved: false };
    });
    c.addEventListener("pointerup", () => {
      if (this.drag !== null && !this.drag.moved && this.hovered !== null) this.onPick(this.hovered.uid);
      this.drag = null;
    });
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.zoomBy(Math.exp(-e.deltaY * 0.0015), e.offsetX, e.offsetY);
    }, { passive: false });
    c.addEventListener("dblclick", () => this.fit());
  }

  _setHovered(actor) {
    if (actor === this.hovered) return;
    this.hovered = actor;
    this.canvas.classList.toggle("pointing", actor !== null);
    this.onHover(actor === null ? null : actor.uid);
  }

  _hitTest() {
    const w = FOOT_X * this.figScale, top = FOOT_Y * this.figScale, bottom = 2 * this.figScale;
    const px = this.pointerX, py = this.pointerY;
    for (let i = this.order.length - 1; i >= 0; i--) {
      const a = this.order[i];
      if (a.leaving) continue;
      if (px >= a.sx - w && px <= a.sx + w && py >= a.sy - top && py <= a.sy + bottom) return a;
    }
    return null;
  }

  // -- the frame --------------------------------------------------------------------------------
  _frame() {
    requestAnimationFrame(this._frame);
    this.tick++;
    // A CSS filter over the canvas would cost more than the drawing itself without a GPU.
    if (this.resting && this.veil >= 1 && this.tick % 4 !== 0) return;
    // The clock that arrivals were stamped with, not the frame's start, which may be earlier.
    const now = performance.now();
    const t0 = now;
    const dt = Math.min(0.1, Math.max(0, (now - this.last) / 1000));
    this.last = now;
    const g = this.ctx;
    const cw = this.canvas.width, ch = this.canvas.height;

    const scale = this.scale;
    if (this.ground === null || (now >= this.groundWanted && this.ground.gs !== this._groundScale())) {
      this.ground = makeGround(this.size, this._groundScale(), this.seedText);
    }
    // the island's centre, nudged down so the figures on the back row have headroom
    const ox = cw / 2 + this.panX * this.dpr;
    const oy = ch / 2 + this.panY * this.dpr + (FIG_H * this.figScale) / 3;
    const hw = (TILE_W / 2) * scale, hh = (TILE_H / 2) * scale;
    const topY = oy - (this.size / 2) * TILE_H * scale; // screen y of the island's top corner
    const gr = this.ground;
    if (this.backdrop === null || this.bdGround !== gr || this.bdX !== ox || this.bdY !== topY ||
        this.bdScale !== scale || this.backdrop.width !== cw || this.backdrop.height !== ch) {
      const k = scale / gr.gs;
      release(this.backdrop);
      this.backdrop = makeBackdrop(cw, ch, gr, ox - gr.ox * k, topY - gr.oy * k, k);
      this.bdGround = gr;
      this.bdX = ox;
      this.bdY = topY;
      this.bdScale = scale;
    }
    g.drawImage(this.backdrop, 0, 0);

    // move everyone, then put them back to front (nearly sorted already: insertion sort)
    const order = this.order;
    let arriving = 0;
    for (let i = 0; i < order.length; i++) this._move(order[i], dt, now);
    for (let i = 1; i < order.length; i++) {
      const a = order[i];
      let j = i - 1;
      while (j >= 0 && order[j].depth > a.depth) {
        order[j + 1] = order[j];
        j--;
      }
      order[j + 1] = a;
    }

    const fs = this.figScale;
    const shadow = this.shadow;
    const shw = shadow.width / 2, shh = shadow.height / 2;
    const anchorX = (FOOT_X + 1) * this.spriteScale, anchorY = (FOOT_Y + 1) * this.spriteScale;
    const hop = this.reduceMotion ? 0 : 3.6 * fs;
    const margin = 60 * fs;
    let drawn = 0, gone = 0, faced = 0;
    const faces = this.faces;
    // the face covers the figure's dome, where its eyes are (figure units, from the sprite's corner)
    const faceX = (1 + FACE_CX - FACE_R) * this.spriteScale, faceY = (1 + FACE_CY - FACE_R) * this.spriteScale;
    const faceD = 2 * FACE_R * this.spriteScale;
    for (let i = 0; i < order.length; i++) {
      const a = order[i];
      let alpha = 1, lift = 0;
      if (now < a.born) {
        arriving++;
        a.sx = -1e9;
        continue;
      }
      if (a.leaving) {
        const t = (now - a.leaving) / LEAVE_MS;
        if (t >= 1) {
          gone++;
          continue;
        }
        alpha = 1 - t;
        lift = t * 22 * fs;
      } else if (now < a.born + SPAWN_MS) {
        arriving++;
        const t = (now - a.born) / SPAWN_MS;
        alpha = Math.min(1, 0.25 + t * 3);
        lift = this.reduceMotion ? 0 : (1 - easeOutBounce(t)) * 40 * fs;
      }
      const sx = ox + (a.x - a.y) * hw;
      const sy = topY + (a.x + a.y) * hh;
      a.sx = sx;
      a.sy = sy;
      if (sx < -margin || sx > cw + margin || sy < -margin || sy > ch + margin * 2) continue;
      if (a.spriteEpoch !== this.spriteEpoch) this._sprites(a);
      const bounce = a.phase > 0 ? Math.abs(Math.sin(a.phase)) * hop : 0;
      if (alpha !== 1) g.globalAlpha = alpha;
      const fx = (sx - anchorX + 0.5) | 0, fy = (sy - anchorY - bounce - lift + 0.5) | 0;
      if (bounce + lift < 0.5) {
        g.drawImage(a.facing > 0 ? a.still : a.stillFlip, fx, fy);
      } else {
        g.drawImage(shadow, (sx - shw + 0.5) | 0, (sy - shh + 0.5) | 0);
        g.drawImage(a.facing > 0 ? a.sprite : a.spriteFlip, fx, fy);
      }
      if (a.face === undefined && faces !== null) a.face = faces.get(a.uid);
      if (a.face) {
        const asleep = a.user.status === "offline";
        if (asleep) g.globalAlpha = alpha * 0.6;
        g.drawImage(a.face, fx + faceX, fy + faceY, faceD, faceD);
        if (asleep) g.globalAlpha = alpha;
        faced++;
      }
      if (alpha !== 1) g.globalAlpha = 1;
      if (a.pulse !== 0) this._pulse(g, a, now, sx, sy - bounce - lift);
      drawn++;
    }
    if (gone > 0) this._sweep(now);
    this.arriving = arriving;
    this.withFaces = faced;
    if (drawn > 0 && !this.firstFigure) {
      this.firstFigure = true;
      if (performance.getEntriesByName("first-figure").length === 0) performance.mark("first-figure");
    }

    if (this.pointerIn && this.drag === null) this._setHovered(this._hitTest());
    this._labels(g, now);
    this._bubbles(g, now);
    this.veil = Math.min(1, Math.max(0, this.veil + (this.resting ? dt : -dt) * 2.5));
    if (this.veil > 0) {
      g.fillStyle = "rgba(18,22,36,0.45)";
      g.globalAlpha = this.veil;
      g.fillRect(0, 0, cw, ch);
      g.globalAlpha = 1;
    }

    const spent = performance.now() - t0;
    this.frameMs[this.frames % this.frameMs.length] = spent;
    this.frames++;
  }

  _groundScale() {
    const worldW = this.size * TILE_W + 64;
    return Math.min(this.scale, GROUND_MAX_PX / worldW);
  }

  _pulse(g, a, now, sx, sy) {
    const t = (now - a.pulse) / PULSE_MS;
    if (t >= 1) {
      a.pulse = 0;
      return;
    }
    const fs = this.figScale;
    g.globalAlpha = 1 - t;
    g.strokeStyle = STATUS_COLORS[a.user.status];
    g.lineWidth = 2 * fs;
    g.beginPath();
    g.arc(sx + (17.5 - FOOT_X) * fs, sy + (5.2 - FOOT_Y) * fs, (3 + t * 9) * fs, 0, Math.PI * 2);
    g.stroke();
    g.globalAlpha = 1;
  }

  /** Forget actors whose leaving animation has ended. */
  _sweep(now) {
    let w = 0;
    for (let r = 0; r < this.order.length; r++) {
      const a = this.order[r];
      if (a.leaving && now - a.leaving >= LEAVE_MS) {
        if (this.actors.get(a.uid) === a) this.actors.delete(a.uid);
        continue;
      }
      this.order[w++] = a;
    }
    this.order.length = w;
  }

  _labels(g, now) {
    if (this.present <= NAMES_ALWAYS_UP_TO) {
      // Front figures first; a name that would cover one already placed waits a moment
      // (and stays hidden a little while, so crossing figures do not make names flicker).
      let placed = 0;
      const rects = this.labelRects;
      for (let i = this.order.length - 1; i >= 0; i--) {
        const a = this.order[i];
        if (a === this.hovered || a === this.highlighted || !this._labelReady(a, false, now)) continue;
        const x = this._labelX(a), y = this._labelY(a);
        const w = a.label.width, h = a.label.height;
        let free = now >= a.labelHiddenUntil;
        for (let k = 0; k < placed * 4 && free; k += 4) {
          if (x < rects[k + 2] && x + w > rects[k] && y < rects[k + 3] && y + h > rects[k + 1]) free = false;
        }
        if (!free) {
          if (now >= a.labelHiddenUntil) a.labelHiddenUntil = now + 700;
          continue;
        }
        rects[placed * 4] = x;
        rects[placed * 4 + 1] = y;
        rects[placed * 4 + 2] = x + w;
        rects[placed * 4 + 3] = y + h;
        placed++;
        if (a.user.status === "offline") g.globalAlpha = 0.72;
        g.drawImage(a.label, x, y);
        g.globalAlpha = 1;
      }
    }
    if (this.highlighted !== null && this.highlighted !== this.hovered) {
      this._ring(g, this.highlighted);
      if (this._labelReady(this.highlighted, true, now)) {
        g.drawImage(this.highlighted.label, this._labelX(this.highlighted), this._labelY(this.highlighted));
      }
    }
    if (this.hovered !== null && this._labelReady(this.hovered, true, now)) {
      g.drawImage(this.hovered.label, this._labelX(this.hovered), this._labelY(this.hovered));
    }
  }

  _labelReady(a, rich, now) {
    if (a.sx < -1e8 || a.leaving || now < a.born + SPAWN_MS * 0.6) return false;
    if (a.label === null || a.labelRich !== rich) {
      release(a.label);
      a.label = makeLabel(a.user.name, a.user.status, rich, this.dpr, a.activity);
      a.labelRich = rich;
    }
    return true;
  }

  _labelX(a) {
    return (a.sx - a.label.width / 2 + 0.5) | 0;
  }

  _labelY(a) {
    const bounce = a.phase > 0 && !this.reduceMotion ? Math.abs(Math.sin(a.phase)) * 3.6 * this.figScale : 0;
    return (a.sy - (FOOT_Y + 6) * this.figScale - a.label.height - bounce + 0.5) | 0;
  }

  _ring(g, a) {
    const fs = this.figScale;
    g.strokeStyle = "rgba(255,255,255,0.9)";
    g.lineWidth = 2 * this.dpr;
    g.beginPath();
    g.ellipse(a.sx, a.sy, 12 * fs, 5 * fs, 0, 0, Math.PI * 2);
    g.stroke();
  }

  _bubbles(g, now) {
    this.chat.update(now);
    const active = this.chat.active;
    const cw = this.canvas.width;
    const nameRoom = this.present <= NAMES_ALWAYS_UP_TO ? 20 * this.dpr : 0;
    for (let i = 0; i < active.length; i++) {
      const b = active[i];
      const a = this.actors.get(b.uid);
      if (a === undefined || a.sx < -1e8) continue;
      if (b.image === null) b.image = makeBubble(b.text, this.dpr);
      const img = b.image;
      const bounce = a.phase > 0 && !this.reduceMotion ? Math.abs(Math.sin(a.phase)) * 3.6 * this.figScale : 0;
      let x = a.sx - img.width / 2;
      x = Math.max(4, Math.min(cw - img.width - 4, x));
      const y = a.sy - (FOOT_Y + 6) * this.figScale - nameRoom - img.height - bounce;
      g.globalAlpha = Chat.alpha(b, now);
      g.drawImage(img, (x + 0.5) | 0, (y + 0.5) | 0);
    }
    g.globalAlpha = 1;
  }
}
