// Live view through the broker (issue 15; docs/app.md, "Live view"). The Live button opens
// #live/<device>: this page picks a random session id, opens the hub's stream of that
// session's segments (ciphertext: the hub cannot open them), then sends the signed `live`
// command and renews it every RENEW_MS while the page is open. Each segment is opened here:
// age-decrypted with this browser's key, the doorbell's signature on its header checked, the
// media's hash checked, and refused if it is for another session, replayed (its index not
// above the last) or expired. The fMP4 goes to Media Source Extensions; playback keeps to
// the live edge. Leaving the page stops the session (and the doorbell ends it by itself
// 30 s after the last renewal if this page vanishes without a word).
import * as seal from "/static/js/seal.js";

const RENEW_MS = 10000;
// s: how far behind the newest frame playback may fall before it jumps, where it lands, and
// the lag it catches up by playing 10% faster instead of jumping
const BEHIND = 0.6, EDGE = 0.1, DRIFT = 0.25;
const SKEW = 60;                     // s of clock difference allowed on the expiry
const dec = new TextDecoder();
const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

// The codecs string of an init segment's H.264 track, from its avcC box.
export function codecOf(init) {
  const at = dec.decode(init).indexOf("avcC");
  if (at < 0) throw new Error("the live stream's init segment has no avcC");
  return "avc1." + hex(init.subarray(at + 5, at + 8));
}

// One live message opened and checked; throws seal.Tampered for anything not the doorbell's.
export async function openSegment(device, message) {
  if (dec.decode(message.subarray(0, 4)) !== "DS2V") throw new seal.Tampered("not a live segment");
  let plain;
  try { plain = await seal.decrypt(message.subarray(4)); }
  catch (e) { throw new seal.Tampered(`a live segment does not open: ${e.message}`); }
  const n = new DataView(plain.buffer, plain.byteOffset, plain.byteLength).getUint32(0);
  const part = seal.signedPart(dec.decode(plain.subarray(4, 4 + n)), "body",
    new Set(["expires", "wall"]));
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, await seal.devicePublic(device),
    seal.unb64(part.doc.sig), part.bytes);
  const header = JSON.parse(dec.decode(part.bytes));
  if (!ok || header.type !== "live" || header.device !== device) {
    throw new seal.Tampered(`a live segment not signed by ${device}'s key`);
  }
  const media = plain.subarray(4 + n);
  if (hex(new Uint8Array(await crypto.subtle.digest("SHA-256", media))) !== header.sha256) {
    throw new seal.Tampered("a live segment's video is not what the doorbell signed");
  }
  return { header, media };
}

// The replay rules, as protocol/live.py's LiveViewer: null to play it, else why not.
export function rules(device, session) {
  let last = -1, needKey = true;
  return (h, now) => {
    if (h.device !== device || h.session !== session) return "for another session";
    if (h.index <= last) return `index ${h.index} is not above ${last} (replayed)`;
    if (h.expires + SKEW < now) return "expired (replayed)";
    if (h.index !== last + 1 && !h.key) needKey = true;
    last = h.index;
    if (needKey && !(h.key && h.init)) return `index ${h.index}: waiting for a keyframe`;
    needKey = false;
    return null;
  };
}

async function command(device, params) {
  const { counter, payload } = await seal.signCommand(device, "live", params);
  const r = await fetch(`/api/devices/${encodeURIComponent(device)}/command`, { method: "POST",
    body: payload, credentials: "same-origin", headers: { "Content-Type": "application/json" } });
  const got = await r.json();
  if (!r.ok) throw new Error(got.error);
  return seal.verifyAck(device, got.ack, counter);
}

// The counter the bench draws into each frame (bench/liveview.py): 16 blocks of 16 px.
function readCounter(canvas, video) {
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, video.videoWidth, video.videoHeight);
  const px = ctx.getImageData(0, 0, 16 * 16, 16).data;
  let n = 0;
  for (let b = 0; b < 16; b++) if (px[(8 * 256 + b * 16 + 8) * 4] > 128) n |= 1 << b;
  return n;
}

function measure(video, stats) {
  const canvas = document.createElement("canvas");
  const each = () => {
    if (stats.stopped) return;
    if (video.videoWidth) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      stats.shown.push({ counter: readCounter(canvas, video), at: Date.now() / 1000 });
    }
    video.requestVideoFrameCallback(each);
  };
  video.requestVideoFrameCallback(each);
}

export async function liveView(device, root, h) {
  const session = hex(crypto.getRandomValues(new Uint8Array(16)));
  const video = h("video", { id: "live-player", autoplay: true, playsinline: true });
  video.muted = true;
  const status = h("p", { id: "live-status" }, "Starting…");
  const stats = { session, segments: 0, refused: [], jumps: 0, shown: [], stopped: false };
  window.__liveStats = stats;          // for the tests and the bench
  const abort = new AbortController();
  let renew = null;
  const stop = (why) => {
    if (stats.stopped) return;
    stats.stopped = true;
    clearInterval(renew);
    abort.abort();
    window.removeEventListener("hashchange", leave);
    status.textContent = why;
    command(device, { session, stop: "1" }).catch(() => {});
  };
  const leave = () => stop("Stopped.");
  window.addEventListener("hashchange", leave);
  root.replaceChildren(h("section", { id: "live" }, h("h2", {}, `${device}, live`), video, status,
    h("button", { id: "live-stop", onclick: () => stop("Stopped.") }, "Stop")));
  if (window.__liveMeasure) measure(video, stats);

  const ms = new MediaSource();
  video.src = URL.createObjectURL(ms);
  await new Promise((r) => ms.addEventListener("sourceopen", r, { once: true }));
  let sb = null;
  const queue = [];
  const pump = () => { if (sb && !sb.updating && queue.length && ms.readyState === "open") sb.appendBuffer(queue.shift()); };
  const chase = () => {        // keep to the live edge: jump over gaps and any backlog
    const b = video.buffered;
    if (!b.length) return;
    const start = b.start(b.length - 1), end = b.end(b.length - 1);
    const lag = end - video.currentTime;
    if (lag > BEHIND || video.currentTime < start) {
      video.currentTime = Math.max(start, end - EDGE);
      stats.jumps += 1;
    } else video.playbackRate = lag > DRIFT ? 1.1 : 1.0;
    if (video.paused) video.play().catch(() => {});
  };
  const check = rules(device, session);

  // the stream first, so the session's first segment (its first picture) is not missed
  let response;
  try {
    response = await fetch(`/api/devices/${encodeURIComponent(device)}/live/${session}`,
      { credentials: "same-origin", signal: abort.signal });
    if (!response.ok) throw new Error((await response.json()).error);
    const ack = await command(device, { session });
    if (!ack.ok) { stop(`${device} refused live view: ${ack.reason}`); return; }
  } catch (err) { stop(`Live view: ${err.message}`); return; }
  status.textContent = `Live from ${device} (session ${session.slice(0, 8)}…)`;
  renew = setInterval(() => command(device, { session }).then((ack) => {
    if (!ack.ok) stop(`${device} ended live view: ${ack.reason}`);
  }).catch((err) => { status.textContent = `renewal: ${err.message}`; }), RENEW_MS);

  const reader = response.body.getReader();
  let buf = new Uint8Array(0);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
      while (buf.length >= 4) {
        const n = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
        if (buf.length < 4 + n) break;
        const message = buf.slice(4, 4 + n);
        buf = buf.slice(4 + n);
        let seg;
        try { seg = await openSegment(device, message); }
        catch (err) { stats.refused.push(err.message); continue; }
        const why = check(seg.header, Date.now() / 1000);
        if (why) { stats.refused.push(why); continue; }
        if (!sb) {
          sb = ms.addSourceBuffer(`video/mp4; codecs="${codecOf(seg.media.subarray(0, seg.header.init))}"`);
          sb.mode = "segments";
          sb.addEventListener("updateend", () => {
            chase();
            const b = video.buffered;      // keep the buffer small: a session may run for hours
            if (!queue.length && b.length && video.currentTime - b.start(0) > 30) sb.remove(0, video.currentTime - 10);
            else pump();
          });
        }
        stats.segments += 1;
        queue.push(seg.media);
        pump();
      }
    }
  } catch (err) { if (!stats.stopped) status.textContent = `Live view: ${err.message}`; }
  if (!stats.stopped) stop("The live view ended.");
}
